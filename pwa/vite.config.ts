import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { defineConfig, type Plugin } from "vite";
import { VitePWA } from "vite-plugin-pwa";

/** Puts the app shell's entry script and stylesheet into index.html. On a slow network each
 * request costs a round trip (2 s on "Slow 3G"): the shell then opens after one, not two. The
 * chunks loaded on demand (the camera decoder) stay files under /assets; the inlined code's
 * imports of them, relative to /assets/, are made absolute. */
function inlineShell(): Plugin {
  return {
    name: "mes-inline-shell",
    apply: "build",
    enforce: "post",
    // After the files are written (Vite finishes the chunks' code late), before the service
    // worker's precache list is made from them (vite-plugin-pwa, at closeBundle).
    writeBundle(options, bundle) {
      const dir = options.dir!;
      const pagePath = join(dir, "index.html");
      let html = readFileSync(pagePath, "utf8");
      const names = Object.keys(bundle);
      for (const [file, output] of Object.entries(bundle)) {
        const tag = `<script type="module" crossorigin src="/${file}"></script>`;
        if (output.type === "chunk" && output.isEntry && html.includes(tag)) {
          for (const other of Object.values(bundle)) {
            if (other.type === "chunk" && other.imports.includes(file)) {
              // It would load the entry a second time (a second app): keep chunks independent.
              throw new Error(`${other.fileName} imports the inlined entry ${file}`);
            }
          }
          let code = readFileSync(join(dir, file), "utf8");
          for (const other of names) {
            if (other === file) continue;
            const base = other.split("/").pop();
            code = code.replaceAll(`\`./${base}\``, `\`/${other}\``);
            code = code.replaceAll(`"./${base}"`, `"/${other}"`);
          }
          code = code.replaceAll("</script", "<\\/script");
          html = html.replace(tag, () => `<script type="module">${code}</script>`);
          rmSync(join(dir, file));
        }
        const link = `<link rel="stylesheet" crossorigin href="/${file}">`;
        if (output.type === "asset" && file.endsWith(".css") && html.includes(link)) {
          const css = readFileSync(join(dir, file), "utf8");
          html = html.replace(link, () => `<style>${css}</style>`);
          rmSync(join(dir, file));
        }
      }
      writeFileSync(pagePath, html);
    },
  };
}

export default defineConfig({
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: { target: "es2022", sourcemap: false, assetsInlineLimit: 0 },
  server: {
    proxy: { "/graphql": { target: "http://127.0.0.1:8000", ws: true } },
  },
  plugins: [
    inlineShell(),
    VitePWA({
      strategies: "injectManifest",
      srcDir: "src",
      filename: "sw.ts",
      registerType: "prompt",
      injectRegister: false,
      manifest: {
        name: "MES shop floor",
        short_name: "MES",
        description: "Scan lots, run steps, approve deviations — also offline.",
        start_url: "/",
        scope: "/",
        display: "standalone",
        orientation: "portrait",
        background_color: "#ffffff",
        theme_color: "#0b3d91",
        icons: [
          { src: "icon-192.png", sizes: "192x192", type: "image/png" },
          { src: "icon-512.png", sizes: "512x512", type: "image/png" },
          { src: "icon-512.png", sizes: "512x512", type: "image/png", purpose: "maskable" },
        ],
      },
      injectManifest: {
        globPatterns: ["**/*.{js,css,html,png,svg,wasm,webmanifest}"],
        maximumFileSizeToCacheInBytes: 3 * 1024 * 1024,
      },
    }),
  ],
});

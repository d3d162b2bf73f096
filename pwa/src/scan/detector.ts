// The barcode reader behind the camera button. Loaded with import() only when the camera opens,
// so neither this module nor the wasm decoder is part of the app shell.
//
// Native BarcodeDetector (Chrome on Android) when it reads every format we need; otherwise the
// `barcode-detector` ponyfill (zxing-cpp compiled to wasm). The wasm is SELF-HOSTED: Vite copies
// it into dist/assets (the `?url` import below) and the service worker precaches it, so the
// camera works offline and nothing is fetched from a CDN (the ponyfill's default is jsDelivr).
import { BarcodeDetector, prepareZXingModule } from "barcode-detector/ponyfill";
import readerWasmUrl from "zxing-wasm/reader/zxing_reader.wasm?url";

/** What the plant prints: GS1 DataMatrix on lots, Code 128 labels, QR codes. */
export const FORMATS = ["data_matrix", "code_128", "qr_code"] as const;

export type DetectedCode = { rawValue: string; format: string };
export type Detector = {
  /** "camera-native" or "camera-wasm": which reader is used (sent along as the scan's source). */
  source: "camera-native" | "camera-wasm";
  detect(image: HTMLVideoElement): Promise<DetectedCode[]>;
};

type NativeDetectorClass = {
  new (options: { formats: string[] }): { detect(image: ImageBitmapSource): Promise<DetectedCode[]> };
  getSupportedFormats(): Promise<string[]>;
};

/** The URL the decoder's wasm is loaded from (for tests and the precache check). */
export const wasmUrl = new URL(readerWasmUrl, location.href).href;

export async function createDetector(): Promise<Detector> {
  const Native = (globalThis as { BarcodeDetector?: NativeDetectorClass }).BarcodeDetector;
  if (Native) {
    const supported = await Native.getSupportedFormats().catch(() => [] as string[]);
    if (FORMATS.every((f) => supported.includes(f))) {
      const native = new Native({ formats: [...FORMATS] });
      return { source: "camera-native", detect: (image) => native.detect(image) };
    }
  }
  // The ponyfill's JS is in this (lazy) chunk; its wasm is fetched only here.
  await prepareZXingModule({
    overrides: {
      locateFile: (path: string, prefix: string) => (path.endsWith(".wasm") ? wasmUrl : prefix + path),
    },
    // Instantiate now, so a missing wasm shows up as the camera opens, not as silent misses.
    fireImmediately: true,
  });
  const poly = new BarcodeDetector({ formats: [...FORMATS] });
  return { source: "camera-wasm", detect: (image) => poly.detect(image) };
}

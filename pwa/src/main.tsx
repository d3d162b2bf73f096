import { render } from "preact";
import { App } from "./App";
import { startOutbox } from "./outbox";
import { refreshMe, user } from "./session";
import "./styles.css";

render(<App />, document.getElementById("app")!);

void startOutbox();
if (user.value && navigator.onLine) void refreshMe().catch(() => undefined);

// The service worker (precached shell): registered after the first paint. A new version
// waits until nothing is queued, then takes over on the next start.
if ("serviceWorker" in navigator && !import.meta.env.DEV) {
  addEventListener("load", () => {
    void navigator.serviceWorker.register("/sw.js", { scope: "/" });
  });
}

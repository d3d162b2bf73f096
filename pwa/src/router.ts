// Hash routes ("#/order/PO-1001"): work offline from the precached shell, no server routes.
import { signal } from "@preact/signals";

function current(): string[] {
  return location.hash
    .replace(/^#\/?/, "")
    .split("/")
    .filter(Boolean)
    .map(decodeURIComponent);
}

/** The route as path segments: [] is home, ["order", "PO-1001"] an order. */
export const route = signal<string[]>(current());
addEventListener("hashchange", () => (route.value = current()));

export function href(...parts: (string | number)[]): string {
  return "#/" + parts.map((p) => encodeURIComponent(String(p))).join("/");
}

export function go(...parts: (string | number)[]): void {
  location.hash = href(...parts);
}

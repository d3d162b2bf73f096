// The shell: a header with the sync badge, the screen for the route, a bottom navigation.
// Screens live in screens/; each is one task for one person at the line.
import { signal } from "@preact/signals";
import type { ComponentType } from "preact";
import { needsAuth, pending, refused, syncing } from "./outbox";
import { route } from "./router";
import { isOperator, isSupervisor, user } from "./session";
import { Deviation } from "./screens/Deviation";
import { Deviations } from "./screens/Deviations";
import { EquipmentBoard } from "./screens/EquipmentBoard";
import { Home } from "./screens/Home";
import { Inspect } from "./screens/Inspect";
import { LotScreen } from "./screens/Lot";
import { Order } from "./screens/Order";
import { RaiseDeviation } from "./screens/RaiseDeviation";
import { Receive } from "./screens/Receive";
import { Scan } from "./screens/Scan";
import { Settings } from "./screens/Settings";
import { SignIn } from "./screens/SignIn";
import { Sync } from "./screens/Sync";

export const online = signal(navigator.onLine);
addEventListener("online", () => (online.value = true));
addEventListener("offline", () => (online.value = false));

/** Route name → screen; the screen gets the rest of the route as `args`. */
const SCREENS: Record<string, ComponentType<{ args: string[] }>> = {
  "": Home,
  order: Order,
  scan: Scan,
  receive: Receive,
  inspect: Inspect,
  raise: RaiseDeviation,
  lot: LotScreen,
  sync: Sync,
  settings: Settings,
  deviations: Deviations,
  deviation: Deviation,
  equipment: EquipmentBoard,
};

function SyncBadge() {
  const waiting = pending.value.length;
  const problems = refused.value.length;
  let text = "All sent";
  let kind = "ok";
  if (needsAuth.value) {
    text = `Sign in to send ${waiting}`;
    kind = "error";
  } else if (problems) {
    text = `${problems} refused`;
    kind = "error";
  } else if (waiting) {
    text = syncing.value ? `Sending ${waiting}…` : `${waiting} waiting`;
    kind = "warn";
  }
  return (
    <a href="#/sync" class={`badge badge-${kind}`} aria-label={`Sync: ${text}`}>
      {text}
    </a>
  );
}

function Nav() {
  const items: [string, string][] = [["#/", "My work"]];
  if (isOperator.value) items.push(["#/scan", "Scan"]);
  if (isSupervisor.value) items.push(["#/deviations", "Deviations"]);
  items.push(["#/equipment", "Machines"], ["#/settings", "Device"]);
  const here = "#/" + (route.value[0] ?? "");
  return (
    <nav class="tabs" aria-label="Main">
      {items.map(([href, label]) => (
        <a key={href} href={href} aria-current={href === here ? "page" : undefined}>
          {label}
        </a>
      ))}
    </nav>
  );
}

export function App() {
  const signedIn = user.value !== null && !needsAuth.value;
  const [name = "", ...args] = route.value;
  const Screen = SCREENS[name] ?? Home;
  return (
    <>
      <header class="top">
        <span class="brand">MES</span>
        <span class={`net net-${online.value ? "on" : "off"}`} role="status">
          {online.value ? "Online" : "Offline"}
        </span>
        {user.value && <SyncBadge />}
      </header>
      {signedIn ? <Screen args={args} /> : <SignIn />}
      {signedIn && <Nav />}
    </>
  );
}

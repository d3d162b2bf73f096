// Shared by the operator screens: the queries whose answers are kept on the device (so that
// after one online visit an order, its components and my orders open offline), and how a
// queued action's state is told in words next to the thing it is about.
import { cachePut } from "../db";
import type { Op } from "../db";
import { dismiss, ops, syncing } from "../outbox";

/** Everything an order screen and a scan need; the same shape for the list and for one order,
 * so the list read on Home fills the device's copy of each order too. */
export const ORDER_FIELDS = `
  number status quantity quantityGood quantityScrap priority dueAt
  product { code name unit }
  components {
    material { code name unit gtin }
    quantityRequired quantityConsumed operationSequence
  }
  operations {
    sequence name instructions status quantityGood quantityScrap
    characteristics { name kind unit lowerLimit upperLimit }
  }`;

export type Component = {
  material: { code: string; name: string; unit: string; gtin: string | null };
  quantityRequired: string;
  quantityConsumed: string;
  operationSequence: number | null;
};
export type Characteristic = {
  name: string;
  kind: "NUMERIC" | "ATTRIBUTE";
  unit: string | null;
  lowerLimit: number | null;
  upperLimit: number | null;
};
export type Operation = {
  sequence: number;
  name: string;
  instructions: string | null;
  status: "PENDING" | "READY" | "RUNNING" | "DONE";
  quantityGood: string;
  quantityScrap: string;
  characteristics: Characteristic[];
};
export type OrderData = {
  number: string;
  status: string;
  quantity: string;
  quantityGood: string;
  quantityScrap: string;
  priority: number;
  dueAt: string | null;
  product: { code: string; name: string; unit: string };
  components: Component[];
  operations: Operation[];
};

export const MY_ORDERS = `query MyOrders($wc: String) {
  productionOrders(first: 100, status: [RELEASED, IN_PROGRESS], workCenter: $wc) {
    edges { node { ${ORDER_FIELDS} } }
  }
}`;
export type MyOrders = { productionOrders: { edges: { node: OrderData }[] } };
export const myOrdersKey = (wc: string | null) => `orders:${wc ?? "-"}`;

export const ORDER = `query Order($number: String!) { productionOrder(number: $number) { ${ORDER_FIELDS} } }`;
export type OrderAnswer = { productionOrder: OrderData | null };
export const orderKey = (number: string) => `order:${number}`;

export const MATERIALS = `{ materials(first: 500) { edges { node {
  code name unit kind lotControlled shelfLifeDays
  incomingCharacteristics { name kind unit lowerLimit upperLimit }
} } } }`;
export type MaterialRow = {
  code: string;
  name: string;
  unit: string;
  kind: string;
  lotControlled: boolean;
  shelfLifeDays: number | null;
  incomingCharacteristics: Characteristic[];
};
export type Materials = { materials: { edges: { node: MaterialRow }[] } };

/** Each order of a fresh list is also stored on its own, as if its screen had been opened. */
export async function storeOrders(list: OrderData[]): Promise<void> {
  for (const order of list) await cachePut(orderKey(order.number), { productionOrder: order });
}

/** A queued action's state in words (never colour alone). */
export function opWords(op: Op): string {
  if (op.state === "done") return "Done";
  if (op.state === "refused") return `Refused: ${op.refusal?.message ?? "no reason given"}`;
  return syncing.value && navigator.onLine ? "Sending…" : "Saved on this device";
}

export function OpStatus(props: { op: Op; dismissable?: boolean }) {
  const { op } = props;
  const words = opWords(op);
  const kind = op.state === "done" ? "done" : op.state === "refused" ? "refused" : words === "Sending…" ? "sending" : "saved";
  return (
    <span class={`opstate opstate-${kind}`}>
      <span class="opstate-word">{words}</span>
      {op.state === "refused" && props.dismissable && (
        <button type="button" class="btn btn-plain btn-small" onClick={() => void dismiss(op.id)}>
          Dismiss
        </button>
      )}
    </span>
  );
}

/** The actions of this device about `entity` (newest first), optionally of one kind. */
export function opsFor(entity: string, kind?: string, match?: (op: Op) => boolean): Op[] {
  return ops.value
    .filter((o) => o.entity === entity && (!kind || o.kind === kind) && (!match || match(o)))
    .reverse();
}

/** "12.5" → 12.5; "" → null; decimal comma accepted. */
export function toNumber(text: string): number | null {
  const t = text.trim().replace(",", ".");
  if (!t) return null;
  const n = Number(t);
  return Number.isFinite(n) ? n : null;
}

/** A decimal quantity as the API takes it (a string), or null when not a number. */
export function toDecimal(text: string): string | null {
  const n = toNumber(text);
  return n === null ? null : String(n);
}

export function limits(c: Characteristic, withUnit = true): string {
  const unit = c.unit && withUnit ? ` ${c.unit}` : "";
  if (c.lowerLimit !== null && c.upperLimit !== null) return `${c.lowerLimit}–${c.upperLimit}${unit}`;
  if (c.lowerLimit !== null) return `at least ${c.lowerLimit}${unit}`;
  if (c.upperLimit !== null) return `at most ${c.upperLimit}${unit}`;
  return "";
}

/** "Assay (%) 98–102 %": the label of a characteristic's field. */
export function characteristicLabel(c: Characteristic): string {
  const unit = c.unit ? ` (${c.unit})` : "";
  const range = limits(c, !c.unit);
  return `${c.name}${unit}${range ? `, limits ${range}` : ""}`;
}

export function formatTime(iso: string | null | undefined): string {
  if (!iso) return "";
  return new Date(iso).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
}

export function formatDate(iso: string | null | undefined): string {
  if (!iso) return "";
  return new Date(iso).toLocaleDateString();
}

/** One lot with what the lot and inspection screens show (one shape, one cache entry). */
export const LOT = `query Lot($number: String!) { lot(number: $number) {
  number status quantity expiresAt supplierLot createdAt
  material { code name unit incomingCharacteristics { name kind unit lowerLimit upperLimit } }
  producedBy { number }
  inspections {
    number status createdAt completedAt
    characteristics { name kind unit lowerLimit upperLimit }
    results { characteristic { name } value passed }
  }
  deviations { number title status severity }
} }`;
export type LotData = {
  number: string;
  status: string;
  quantity: string;
  expiresAt: string | null;
  supplierLot: string | null;
  createdAt: string;
  material: { code: string; name: string; unit: string; incomingCharacteristics: Characteristic[] };
  producedBy: { number: string } | null;
  inspections: {
    number: string;
    status: string;
    createdAt: string;
    completedAt: string | null;
    characteristics: Characteristic[];
    results: { characteristic: { name: string }; value: number | null; passed: boolean }[];
  }[];
  deviations: { number: string; title: string; status: string; severity: string }[];
};
export type LotAnswer = { lot: LotData | null };
export const lotKey = (number: string) => `lot:${number}`;

/** "120.000000" → "120", "1.500000" → "1.5" (the API sends decimals with all their places). */
export function qty(value: string | number | null | undefined): string {
  if (value === null || value === undefined || value === "") return "";
  const s = String(value);
  return s.includes(".") ? s.replace(/\.?0+$/, "") : s;
}

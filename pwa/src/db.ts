// IndexedDB on this device: the outbox of actions not yet sent, and reference data cached for
// offline lookups (my orders, lots seen, deviations).
import { openDB, type DBSchema, type IDBPDatabase } from "idb";

export type OpState = "pending" | "done" | "refused" | "dismissed";

export interface Op {
  /** The clientMutationId: made once when queued, the same on every resend. */
  id: string;
  /** Queue order on this device. */
  seq: number;
  kind: string;
  input: Record<string, unknown>;
  /** One line for people: "Scan LOT-7 for PO-1001". */
  summary: string;
  /** What it is about (an order number, a lot number), to show it next to that thing. */
  entity: string;
  user: string;
  state: OpState;
  createdAt: string;
  attempts: number;
  lastError?: string;
  /** The server's refusal (code and message), kept until someone dismisses or corrects it. */
  refusal?: { code: string; message: string; field?: string | null };
  result?: unknown;
  doneAt?: string;
}

export interface Cached {
  key: string;
  value: unknown;
  fetchedAt: string;
}

interface Schema extends DBSchema {
  outbox: { key: string; value: Op; indexes: { "by-seq": number; "by-state": OpState } };
  refdata: { key: string; value: Cached };
  meta: { key: string; value: { key: string; value: unknown } };
}

let opened: Promise<IDBPDatabase<Schema>> | null = null;

export function db(): Promise<IDBPDatabase<Schema>> {
  opened ??= openDB<Schema>("mes", 1, {
    upgrade(database) {
      const outbox = database.createObjectStore("outbox", { keyPath: "id" });
      outbox.createIndex("by-seq", "seq", { unique: true });
      outbox.createIndex("by-state", "state");
      database.createObjectStore("refdata", { keyPath: "key" });
      database.createObjectStore("meta", { keyPath: "key" });
    },
  });
  return opened;
}

export async function cachePut(key: string, value: unknown): Promise<void> {
  await (await db()).put("refdata", { key, value, fetchedAt: new Date().toISOString() });
}

export async function cacheGet<T>(key: string): Promise<{ value: T; fetchedAt: string } | null> {
  const row = await (await db()).get("refdata", key);
  return row ? { value: row.value as T, fetchedAt: row.fetchedAt } : null;
}

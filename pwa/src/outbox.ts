// The outbox: every operator action is written here first (IndexedDB, with its
// clientMutationId) and shown at once; `flush` sends what is pending in queue order, in
// batches (one request, one aliased mutation per action, run in order by the server), from
// one tab at a time. A resend after a lost answer is safe: the server answers a known
// clientMutationId with the stored outcome and changes nothing. What the server refuses stays
// here, with its reason, until someone dismisses it or queues a correction.
import { computed, signal } from "@preact/signals";
import { AuthError, NetworkError, newId, request, type MutationError } from "./api";
import { db, type Op } from "./db";
import { user } from "./session";

/** What each queued action calls: the mutation field, its input type, what to read back. */
export const OPERATIONS = {
  scanLot: {
    input: "ScanLotInput",
    select: "lot { number status quantity material { code name unit } } consumption { quantity }",
  },
  startOperation: { input: "OperationActionInput", select: "operation { sequence status }" },
  completeOperation: {
    input: "CompleteOperationInput",
    select: "operation { sequence status quantityGood quantityScrap }",
  },
  receiveLot: { input: "ReceiveLotInput", select: "lot { number status quantity }" },
  startInspection: {
    input: "StartInspectionInput",
    select: "inspection { number status characteristics { name kind unit lowerLimit upperLimit } }",
  },
  recordInspectionResults: {
    input: "RecordResultsInput",
    select: "inspection { number status } deviation { number }",
  },
  raiseDeviation: { input: "RaiseDeviationInput", select: "deviation { number status }" },
} as const;
export type OpKind = keyof typeof OPERATIONS;

/** At most this many actions a request (the API allows 50 aliases). */
export const BATCH = 50;
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 60_000;
const TIMER_MS = 30_000;
/** Sent actions are kept this long to show them, then forgotten. */
const KEEP_DONE_MS = 24 * 3600 * 1000;

/** Every action of this device not yet forgotten, in queue order. */
export const ops = signal<Op[]>([]);
export const pending = computed(() => ops.value.filter((o) => o.state === "pending"));
export const refused = computed(() => ops.value.filter((o) => o.state === "refused"));
export const syncing = signal(false);
export const lastSync = signal<{ at: string; error?: string } | null>(null);
/** Sending is paused until the user signs in again. */
export const needsAuth = signal(false);

let channel: BroadcastChannel | null = null;

async function reload(tell = true): Promise<void> {
  const all = await (await db()).getAllFromIndex("outbox", "by-seq");
  ops.value = all.filter((o) => o.state !== "dismissed");
  if (tell) channel?.postMessage("changed"); // other tabs of the app show it too
}

/** Queues an action and shows it at once; sending starts right away if online. */
export async function enqueue(
  kind: OpKind,
  input: Record<string, unknown>,
  summary: string,
  entity: string,
): Promise<Op> {
  const database = await db();
  const tx = database.transaction("outbox", "readwrite");
  const last = await tx.store.index("by-seq").openCursor(null, "prev");
  const op: Op = {
    id: newId(),
    seq: (last?.value.seq ?? 0) + 1,
    kind,
    input,
    summary,
    entity,
    user: user.value?.username ?? "",
    state: "pending",
    createdAt: new Date().toISOString(),
    attempts: 0,
  };
  await tx.store.add(op);
  await tx.done;
  ops.value = [...ops.value, op];
  channel?.postMessage("changed");
  void flush();
  return op;
}

/** Takes a refused action off the list (it stays in the device's history as dismissed). */
export async function dismiss(id: string): Promise<void> {
  const database = await db();
  const op = await database.get("outbox", id);
  if (!op || op.state !== "refused") return;
  await database.put("outbox", { ...op, state: "dismissed" });
  await reload();
}

/** A refused action corrected: the old one is dismissed, the corrected one queued anew (with a
 * new clientMutationId: it is a new request). */
export async function correct(id: string, input: Record<string, unknown>): Promise<Op | null> {
  const database = await db();
  const op = await database.get("outbox", id);
  if (!op || op.state !== "refused") return null;
  await database.put("outbox", { ...op, state: "dismissed" });
  await reload();
  return enqueue(op.kind as OpKind, input, op.summary, op.entity);
}

let retryDelay = RETRY_MIN_MS;
let retryTimer: ReturnType<typeof setTimeout> | undefined;

function scheduleRetry(): void {
  clearTimeout(retryTimer);
  const wait = Math.random() * retryDelay; // full jitter
  retryDelay = Math.min(retryDelay * 2, RETRY_MAX_MS);
  retryTimer = setTimeout(() => void flush(), wait);
}

function mutationDocument(batch: Op[]): string {
  const vars = batch.map((o, i) => `$v${i}: ${OPERATIONS[o.kind as OpKind].input}!`);
  const fields = batch.map((o, i) => {
    const spec = OPERATIONS[o.kind as OpKind];
    return `m${i}: ${o.kind}(input: $v${i}) { ${spec.select} errors { code message field } }`;
  });
  return `mutation Sync(${vars.join(", ")}) { ${fields.join(" ")} }`;
}

type Payload = { errors?: MutationError[] } & Record<string, unknown>;

/** Sends one batch; true when the queue may go on. */
async function sendBatch(batch: Op[]): Promise<boolean> {
  const variables: Record<string, unknown> = {};
  batch.forEach((o, i) => (variables[`v${i}`] = { ...o.input, clientMutationId: o.id }));
  const database = await db();
  let result;
  try {
    result = await request<Record<string, Payload | null>>(mutationDocument(batch), variables);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const tx = database.transaction("outbox", "readwrite");
    for (const o of batch) await tx.store.put({ ...o, attempts: o.attempts + 1, lastError: message });
    await tx.done;
    if (error instanceof AuthError) needsAuth.value = true;
    lastSync.value = { at: new Date().toISOString(), error: message };
    return false;
  }
  const data = result.data ?? {};
  const topErrors = result.errors ?? [];
  const now = new Date().toISOString();
  const tx = database.transaction("outbox", "readwrite");
  for (const [i, o] of batch.entries()) {
    const payload = data[`m${i}`];
    const own = topErrors.find((e) => e.path?.[0] === `m${i}`);
    if (payload && !(payload.errors?.length)) {
      await tx.store.put({ ...o, state: "done", result: payload, doneAt: now, lastError: undefined });
    } else if (payload?.errors?.length) {
      await tx.store.put({ ...o, state: "refused", refusal: payload.errors[0], doneAt: now });
    } else {
      // No payload: the whole request failed (a top-level error) or this field did.
      const message = (own ?? topErrors[0])?.message ?? "no answer for this action";
      const code = (own ?? topErrors[0])?.extensions?.code ?? "ERROR";
      await tx.store.put({ ...o, state: "refused", refusal: { code, message }, doneAt: now });
    }
  }
  await tx.done;
  lastSync.value = { at: now };
  return true;
}

async function flushNow(): Promise<void> {
  if (syncing.value) return;
  syncing.value = true;
  try {
    for (;;) {
      const database = await db();
      const all = await database.getAllFromIndex("outbox", "by-seq");
      const me = user.value?.username;
      const batch = all.filter((o) => o.state === "pending" && o.user === me).slice(0, BATCH);
      if (!batch.length || needsAuth.value) break;
      const ok = await sendBatch(batch);
      await reload();
      if (!ok) {
        if (!needsAuth.value) scheduleRetry();
        return;
      }
      retryDelay = RETRY_MIN_MS;
    }
  } finally {
    syncing.value = false;
  }
}

/** Sends what is pending, unless another tab of this app is doing it. */
export async function flush(): Promise<void> {
  if (!user.value || !navigator.onLine) return;
  if ("locks" in navigator) {
    await navigator.locks.request("mes-outbox", { ifAvailable: true }, async (lock) => {
      if (lock) await flushNow();
    });
  } else {
    await flushNow();
  }
}

async function forgetOld(): Promise<void> {
  const database = await db();
  const cutoff = Date.now() - KEEP_DONE_MS;
  const tx = database.transaction("outbox", "readwrite");
  for (const o of await tx.store.getAll()) {
    if ((o.state === "done" || o.state === "dismissed") && Date.parse(o.doneAt ?? o.createdAt) < cutoff) {
      await tx.store.delete(o.id);
    }
  }
  await tx.done;
}

/** On app start: load the queue, send it, and keep sending when the network returns, when the
 * app comes to the front, and on a timer. */
export async function startOutbox(): Promise<void> {
  await forgetOld();
  await reload();
  const kick = () => {
    retryDelay = RETRY_MIN_MS;
    void flush();
  };
  addEventListener("online", kick);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") kick();
  });
  setInterval(() => void flush(), TIMER_MS);
  if ("BroadcastChannel" in self) {
    channel = new BroadcastChannel("mes-outbox");
    channel.onmessage = () => void reload(false);
  }
  kick();
}

/** Resume after signing in again. */
export function resumeAfterSignIn(): void {
  needsAuth.value = false;
  retryDelay = RETRY_MIN_MS;
  void flush();
}

export function isOnline(): boolean {
  return navigator.onLine;
}

export { NetworkError };

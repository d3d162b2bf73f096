// What this device has not sent, what the server refused, and what went through. Refusals stay
// until someone dismisses them or corrects the action and sends it again (as a new request).
import { useState } from "preact/hooks";
import type { Op } from "../db";
import { correct, dismiss, flush, lastSync, needsAuth, ops, pending, refused, syncing } from "../outbox";
import { user } from "../session";
import { Button, Notice, Page } from "../ui";
import { formatTime } from "../operator/common";

const LABELS: Record<string, string> = {
  code: "Code",
  orderNumber: "Order number",
  sequence: "Step",
  operationSequence: "Step",
  quantity: "Quantity",
  quantityGood: "Good quantity",
  quantityScrap: "Scrap quantity",
  scrapReason: "Scrap reason",
  scannedAt: "Scanned at",
  number: "Lot number",
  materialCode: "Material",
  expiresAt: "Expires at",
  supplierLot: "Supplier lot",
  lotNumber: "Lot number",
  inspectionNumber: "Inspection number",
  results: "Results",
  title: "Title",
  description: "Description",
  severity: "Severity",
  lotNumbers: "Lot numbers",
};
/** Fields that anyone correcting an action may want, even when the first try left them out. */
const OPTIONAL: Record<string, string[]> = {
  completeOperation: ["scrapReason"],
  receiveLot: ["expiresAt", "supplierLot"],
  scanLot: ["quantity"],
  raiseDeviation: ["description", "lotNumbers", "orderNumber"],
};

export function Sync(_props: { args: string[] }) {
  const waiting = pending.value;
  const problems = refused.value;
  const sent = ops.value.filter((o) => o.state === "done").reverse().slice(0, 20);
  const others = waiting.filter((o) => o.user !== user.value?.username).length;
  const last = lastSync.value;

  return (
    <Page title="Sync" back="#/">
      <ul class="counts" aria-label="Counts">
        <li>
          <strong>{waiting.length}</strong> waiting
        </li>
        <li>
          <strong>{problems.length}</strong> refused
        </li>
        <li>
          <strong>{sent.length}</strong> sent recently
        </li>
      </ul>
      {needsAuth.value && <Notice kind="warn">Sign in again to send what is waiting.</Notice>}
      {!navigator.onLine && <Notice kind="info">Offline: actions are kept on this device and sent when the network is back.</Notice>}
      {last && (
        <p class="hint">
          Last try {formatTime(last.at)}
          {last.error ? `: ${last.error}` : ": OK"}
        </p>
      )}
      <Button onClick={() => void flush()} disabled={syncing.value}>
        {syncing.value ? "Sending…" : "Send now"}
      </Button>

      <section aria-labelledby="refused-h">
        <h2 id="refused-h">Refused</h2>
        {problems.length === 0 ? (
          <p>Nothing refused.</p>
        ) : (
          <ul class="list">
            {problems.map((o) => (
              <RefusedItem key={o.id} op={o} />
            ))}
          </ul>
        )}
      </section>

      <section aria-labelledby="waiting-h">
        <h2 id="waiting-h">Waiting</h2>
        {waiting.length === 0 ? (
          <p>Nothing waiting.</p>
        ) : (
          <ul class="list">
            {waiting.map((o) => (
              <li key={o.id} class="card">
                <span class="op-summary">{o.summary}</span>
                <span class="hint">
                  {" "}
                  · saved {formatTime(o.createdAt)} · {o.attempts} attempt{o.attempts === 1 ? "" : "s"}
                  {o.user !== user.value?.username && ` · by ${o.user}`}
                </span>
                {o.lastError && <p class="op-error">Last error: {o.lastError}</p>}
              </li>
            ))}
          </ul>
        )}
        {others > 0 && (
          <p class="hint">
            {others} of these belong to another user and are sent when they sign in on this device.
          </p>
        )}
      </section>

      <section aria-labelledby="sent-h">
        <h2 id="sent-h">Sent</h2>
        {sent.length === 0 ? (
          <p>Nothing sent yet.</p>
        ) : (
          <ul class="list">
            {sent.map((o) => (
              <li key={o.id} class="card">
                <span class="op-summary">{o.summary}</span>{" "}
                <span class="pill pill-done">Done</span>
                <span class="hint"> {formatTime(o.doneAt)}</span>
              </li>
            ))}
          </ul>
        )}
      </section>
    </Page>
  );
}

type Value = string | number | boolean | null | undefined | unknown[] | Record<string, unknown>;

function toText(value: Value): string {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) {
    return value.every((v) => typeof v === "string") ? value.join(", ") : JSON.stringify(value);
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** The edited text back into the type the action had. */
function fromText(key: string, text: string, before: Value): Value | undefined {
  const t = text.trim();
  if (!t) return before === null ? null : undefined;
  if (typeof before === "number") return Number(t.replace(",", "."));
  if (typeof before === "boolean") return t === "true";
  if (key === "lotNumbers" || (Array.isArray(before) && before.every((v) => typeof v === "string"))) {
    return t.split(/[,;\s]+/).filter(Boolean);
  }
  if (Array.isArray(before) || (before && typeof before === "object")) return JSON.parse(t) as Value;
  if (key === "sequence" || key === "operationSequence") return Number(t);
  return key === "code" ? t.replace(/\|/g, "\x1d") : t;
}

function RefusedItem(props: { op: Op }) {
  const { op } = props;
  const [editing, setEditing] = useState(false);
  const [problem, setProblem] = useState<string | null>(null);
  const keys = [...Object.keys(op.input)];
  for (const k of OPTIONAL[op.kind] ?? []) if (!keys.includes(k)) keys.push(k);
  const fault = op.refusal?.field?.split(".").pop();
  const base = `fix-${op.id.slice(0, 8)}`;

  async function send(event: Event) {
    event.preventDefault();
    const data = new FormData(event.currentTarget as HTMLFormElement);
    const input: Record<string, unknown> = {};
    try {
      for (const key of keys) {
        const value = fromText(key, String(data.get(key) ?? ""), op.input[key] as Value);
        if (value !== undefined) input[key] = value;
      }
    } catch {
      return setProblem("One of the fields is not in the right form.");
    }
    setProblem(null);
    await correct(op.id, input);
  }

  return (
    <li class="card refused-item">
      <p class="op-summary">{op.summary}</p>
      <p class="op-refusal">
        <span class="pill pill-refused">Refused</span> <code>{op.refusal?.code}</code>:{" "}
        {op.refusal?.message}
        {op.refusal?.field && <span class="hint"> (field {op.refusal.field})</span>}
      </p>
      <p class="hint">Saved {formatTime(op.createdAt)}</p>
      {!editing ? (
        <div class="row">
          <Button kind="plain" onClick={() => void dismiss(op.id)}>
            Dismiss
          </Button>
          <Button kind="primary" onClick={() => setEditing(true)}>
            Correct
          </Button>
        </div>
      ) : (
        <form onSubmit={(e) => void send(e)} autoComplete="off" class="correct-form">
          {keys.map((key) => {
            const before = op.input[key] as Value;
            const text = key === "code" ? toText(before).split("\x1d").join("|") : toText(before);
            const big = text.length > 60 || key === "description" || key === "results";
            const id = `${base}-${key}`;
            return (
              <div class="field" key={key}>
                <label for={id}>{LABELS[key] ?? key}</label>
                {big ? (
                  <textarea id={id} name={key} defaultValue={text} aria-invalid={fault === key || undefined} />
                ) : (
                  <input
                    id={id}
                    name={key}
                    defaultValue={text}
                    aria-invalid={fault === key || undefined}
                    autoCapitalize="off"
                    spellcheck={false}
                  />
                )}
              </div>
            );
          })}
          {problem && <Notice kind="error">{problem}</Notice>}
          <button type="submit" class="btn btn-primary">
            Send again
          </button>
          <Button kind="plain" onClick={() => setEditing(false)}>
            Cancel
          </Button>
        </form>
      )}
    </li>
  );
}

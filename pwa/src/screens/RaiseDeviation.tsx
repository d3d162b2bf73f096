// Raising a deviation from the line (a torn bag, a wrong label): queued like every action, so it
// can be raised offline; its lots go ON HOLD when the server books it.
import { useState } from "preact/hooks";
import { enqueue, ops } from "../outbox";
import { href } from "../router";
import { Field, Notice, Page } from "../ui";
import { OpStatus } from "../operator/common";

const SEVERITIES = ["MINOR", "MAJOR", "CRITICAL"] as const;
type Raised = { deviation?: { number: string; status: string } | null };

export function RaiseDeviation(_props: { args: string[] }) {
  const [problem, setProblem] = useState<string | null>(null);
  const recent = ops.value.filter((o) => o.kind === "raiseDeviation").reverse().slice(0, 10);

  async function submit(event: Event) {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const data = new FormData(form);
    const title = String(data.get("title") ?? "").trim();
    const description = String(data.get("description") ?? "").trim();
    const severity = String(data.get("severity") ?? "");
    const lotNumbers = String(data.get("lots") ?? "")
      .split(/[,;\s]+/)
      .map((s) => s.trim())
      .filter(Boolean);
    const orderNumber = String(data.get("order") ?? "").trim();
    if (!title) return setProblem("Enter a title.");
    if (!severity) return setProblem("Choose the severity.");
    setProblem(null);
    const input: Record<string, unknown> = { title, severity };
    if (description) input.description = description;
    if (lotNumbers.length) input.lotNumbers = lotNumbers;
    if (orderNumber) input.orderNumber = orderNumber;
    const about = lotNumbers[0] ?? orderNumber ?? "";
    await enqueue("raiseDeviation", input, `Deviation “${title}” (${severity})`, about);
    form.reset();
  }

  return (
    <Page title="Raise a deviation" back="#/">
      <form class="stack-form" onSubmit={(e) => void submit(e)} autoComplete="off">
        <Field label="Title" id="dev-title" name="title" required />
        <div class="field">
          <label for="dev-description">Description</label>
          <textarea id="dev-description" name="description" rows={4} />
        </div>
        <div class="field">
          <label for="dev-severity">Severity</label>
          <select id="dev-severity" name="severity" required>
            <option value="">— choose —</option>
            {SEVERITIES.map((s) => (
              <option key={s} value={s}>
                {s[0] + s.slice(1).toLowerCase()}
              </option>
            ))}
          </select>
        </div>
        <Field
          label="Lot numbers"
          id="dev-lots"
          name="lots"
          autoCapitalize="off"
          spellcheck={false}
          hint="Comma separated. These lots go on hold."
        />
        <Field label="Order number" id="dev-order" name="order" autoCapitalize="off" spellcheck={false} />
        {problem && <Notice kind="error">{problem}</Notice>}
        <button type="submit" class="btn btn-primary">
          Raise deviation
        </button>
      </form>
      {recent.length > 0 && (
        <section aria-labelledby="raised-h">
          <h2 id="raised-h">Raised on this device</h2>
          <ul class="list" aria-live="polite" aria-labelledby="raised-h">
            {recent.map((o) => {
              const dev = (o.state === "done" ? (o.result as Raised) : null)?.deviation;
              return (
                <li key={o.id} class="card">
                  <span class="op-summary">{o.summary}</span> <OpStatus op={o} dismissable />
                  {dev && (
                    <>
                      {" "}
                      <a href={href("deviation", dev.number)}>{dev.number}</a>
                    </>
                  )}
                </li>
              );
            })}
          </ul>
        </section>
      )}
    </Page>
  );
}

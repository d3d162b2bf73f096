// Receiving a lot of material at goods-in. The materials come from the device's copy (read when
// online), the receipt goes through the outbox and shows its state below the form.
import { useState } from "preact/hooks";
import { useQuery } from "../data";
import { enqueue, ops } from "../outbox";
import { href } from "../router";
import { Age, Field, Notice, Page, Status } from "../ui";
import { MATERIALS, OpStatus, toDecimal, type Materials } from "../operator/common";

type LotResult = { lot?: { number: string; status: string; quantity: string } | null };

/** The end of the chosen day on this device's clock. */
function endOfDay(date: string): string {
  return new Date(`${date}T23:59:59`).toISOString();
}

export function Receive(_props: { args: string[] }) {
  const materials = useQuery<Materials>("materials", MATERIALS);
  const list = materials.data?.materials.edges.map((e) => e.node) ?? [];
  const [problem, setProblem] = useState<string | null>(null);
  const [material, setMaterial] = useState("");
  const chosen = list.find((m) => m.code === material);
  const recent = ops.value.filter((o) => o.kind === "receiveLot").reverse().slice(0, 10);

  async function submit(event: Event) {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const data = new FormData(form);
    const number = String(data.get("number") ?? "").trim();
    const quantity = toDecimal(String(data.get("quantity") ?? ""));
    const expires = String(data.get("expires") ?? "");
    const supplierLot = String(data.get("supplierLot") ?? "").trim();
    if (!number) return setProblem("Enter the lot number.");
    if (!material) return setProblem("Choose the material.");
    if (quantity === null || Number(quantity) <= 0) return setProblem("Enter the quantity (a number above 0).");
    setProblem(null);
    const input: Record<string, unknown> = { number, materialCode: material, quantity };
    if (expires) input.expiresAt = endOfDay(expires);
    if (supplierLot) input.supplierLot = supplierLot;
    await enqueue("receiveLot", input, `Receive lot ${number}: ${quantity} ${chosen?.unit ?? ""} ${material}`.trim(), number);
    form.reset();
    setMaterial("");
    (form.elements.namedItem("number") as HTMLInputElement | null)?.focus();
  }

  return (
    <Page title="Receive a lot" back="#/">
      <form class="stack-form" onSubmit={(e) => void submit(e)} autoComplete="off">
        <Field label="Lot number" id="rcv-number" name="number" autoCapitalize="off" spellcheck={false} required />
        <div class="field">
          <label for="rcv-material">Material</label>
          <select
            id="rcv-material"
            name="material"
            required
            value={material}
            onChange={(e) => setMaterial((e.currentTarget as HTMLSelectElement).value)}
          >
            <option value="">— choose —</option>
            {list.map((m) => (
              <option key={m.code} value={m.code}>
                {m.code} · {m.name}
              </option>
            ))}
          </select>
          <Age fetchedAt={materials.fetchedAt} offline={materials.offline} />
          {materials.offline && !materials.data && (
            <p class="hint">The materials list was never read on this device: open this screen once online.</p>
          )}
          {chosen && chosen.incomingCharacteristics.length > 0 && (
            <p class="hint">
              Goes to QUARANTINE until its incoming inspection passes (
              {chosen.incomingCharacteristics.map((c) => c.name).join(", ")}).
            </p>
          )}
        </div>
        <Field
          label="Quantity"
          hint={chosen ? `In ${chosen.unit}.` : undefined}
          id="rcv-quantity"
          name="quantity"
          inputMode="decimal"
          required
        />
        <Field label="Expires on" id="rcv-expires" name="expires" type="date" />
        <Field label="Supplier lot" id="rcv-supplier" name="supplierLot" autoCapitalize="off" spellcheck={false} />
        {problem && <Notice kind="error">{problem}</Notice>}
        <button type="submit" class="btn btn-primary">
          Receive lot
        </button>
      </form>
      {recent.length > 0 && (
        <section aria-labelledby="received-h">
          <h2 id="received-h">Received on this device</h2>
          <ul class="list" aria-live="polite" aria-labelledby="received-h">
            {recent.map((o) => {
              const lot = (o.state === "done" ? (o.result as LotResult) : null)?.lot;
              return (
                <li key={o.id} class="card">
                  <span class="op-summary">{o.summary}</span> <OpStatus op={o} dismissable />
                  {lot && (
                    <span class="scan-lot">
                      {" "}
                      <a href={href("lot", lot.number)}>Lot {lot.number}</a> <Status value={lot.status} />
                      {lot.status === "QUARANTINE" && (
                        <>
                          {" "}
                          <a href={href("inspect", lot.number)}>Inspect</a>
                        </>
                      )}
                    </span>
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

// One order: what to make, the material it needs (needed vs consumed), and its steps. Starting
// and completing a step go through the outbox: the step shows at once what this device did
// ("Saved on this device", "Sending…", "Done", "Refused: …"), and the next step can be started
// even offline when the one before was completed here.
import { useEffect, useRef, useState } from "preact/hooks";
import { useQuery } from "../data";
import type { Op } from "../db";
import { subscribe } from "../live";
import { enqueue, ops } from "../outbox";
import { href } from "../router";
import { Button, Field, Notice, Page, ReadState, Status } from "../ui";
import {
  ORDER,
  OpStatus,
  orderKey,
  qty,
  toDecimal,
  type Operation,
  type OrderAnswer,
} from "../operator/common";

const RANK = { PENDING: 0, READY: 1, RUNNING: 2, DONE: 3 } as const;
type StepStatus = keyof typeof RANK;

/** The steps as the server last told them, moved on by what this device has queued (a start
 * makes a step RUNNING, a completion DONE and the next one READY). Never moves a step back. */
function withLocal(operations: Operation[], mine: Op[]): Map<number, StepStatus> {
  const status = new Map<number, StepStatus>(operations.map((o) => [o.sequence, o.status]));
  const raise = (seq: number, to: StepStatus) => {
    const now = status.get(seq);
    if (now !== undefined && RANK[to] > RANK[now]) status.set(seq, to);
  };
  const order = [...operations].sort((a, b) => a.sequence - b.sequence);
  for (const op of mine) {
    if (op.state === "refused") continue;
    const seq = Number(op.input.sequence);
    if (op.kind === "startOperation") raise(seq, "RUNNING");
    if (op.kind === "completeOperation") {
      raise(seq, "DONE");
      const i = order.findIndex((o) => o.sequence === seq);
      if (i >= 0 && order[i + 1]) raise(order[i + 1].sequence, "READY");
    }
  }
  return status;
}

export function Order(props: { args: string[] }) {
  const number = props.args[0] ?? "";
  const order = useQuery<OrderAnswer>(orderKey(number), ORDER, { number });
  const data = order.data?.productionOrder ?? null;
  const mine = ops.value.filter((o) => o.entity === number);

  // Read again when one of my actions for this order got its answer, or the server says the
  // order changed (a hint only: the read is what counts).
  const answered = mine.filter((o) => o.state !== "pending").length;
  const seen = useRef(answered);
  useEffect(() => {
    if (answered !== seen.current) {
      seen.current = answered;
      if (navigator.onLine) order.reload();
    }
  }, [answered]);
  useEffect(
    () =>
      subscribe(
        "subscription ($n: String) { productionOrderChanged(number: $n) { number } }",
        { n: number },
        () => order.reload(),
        () => order.reload(),
      ),
    [number],
  );

  const status = data ? withLocal(data.operations, mine) : new Map<number, StepStatus>();
  const scansWaiting = mine.filter((o) => o.kind === "scanLot" && o.state === "pending").length;

  return (
    <Page title={`Order ${number}`} back="#/">
      <ReadState read={order} found={!!data} what="order" name={number} />
      {data && (
        <>
          <dl class="op-facts">
            <div>
              <dt>Product</dt>
              <dd>
                {data.product.name} ({data.product.code})
              </dd>
            </div>
            <div>
              <dt>Quantity</dt>
              <dd>
                {qty(data.quantity)} {data.product.unit}
                {Number(data.quantityGood) > 0 && ` · ${qty(data.quantityGood)} good`}
                {Number(data.quantityScrap) > 0 && ` · ${qty(data.quantityScrap)} scrap`}
              </dd>
            </div>
            <div>
              <dt>Status</dt>
              <dd>
                <Status value={data.status} />
              </dd>
            </div>
          </dl>
          <a class="btn btn-primary linkbtn" href={href("scan", number)}>
            Scan material
          </a>

          <section aria-labelledby="components-h">
            <h2 id="components-h">Components</h2>
            {scansWaiting > 0 && (
              <p class="hint">
                {scansWaiting} scan{scansWaiting === 1 ? "" : "s"} saved on this device, not counted
                yet.
              </p>
            )}
            {data.components.length === 0 && <p>No components.</p>}
            <ul class="list">
              {data.components.map((c) => {
                const done = Number(c.quantityConsumed) >= Number(c.quantityRequired);
                return (
                  <li key={c.material.code} class="card component">
                    <h3>{c.material.name}</h3>
                    <p class="component-qty">
                      <span>
                        Needed {qty(c.quantityRequired)} {c.material.unit}
                      </span>
                      {" · "}
                      <span>
                        Consumed {qty(c.quantityConsumed)} {c.material.unit}
                      </span>
                      {done && (
                        <>
                          {" "}
                          <span class="status status-done">COMPLETE</span>
                        </>
                      )}
                    </p>
                    <p class="hint">
                      {c.material.code}
                      {c.operationSequence !== null && ` · for step ${c.operationSequence}`}
                    </p>
                  </li>
                );
              })}
            </ul>
          </section>

          <section aria-labelledby="steps-h">
            <h2 id="steps-h">Steps</h2>
            {[...data.operations]
              .sort((a, b) => a.sequence - b.sequence)
              .map((op) => (
                <Step
                  key={op.sequence}
                  order={number}
                  op={op}
                  status={status.get(op.sequence) ?? op.status}
                  mine={mine.filter(
                    (o) =>
                      (o.kind === "startOperation" || o.kind === "completeOperation") &&
                      Number(o.input.sequence) === op.sequence,
                  )}
                />
              ))}
          </section>
        </>
      )}
    </Page>
  );
}

function Step(props: { order: string; op: Operation; status: StepStatus; mine: Op[] }) {
  const { order, op, status } = props;
  const [problem, setProblem] = useState<string | null>(null);
  const id = `s${op.sequence}`;
  const local = status !== op.status;
  const localDone = props.mine.filter((o) => o.kind === "completeOperation" && o.state !== "refused").at(-1);

  async function start() {
    setProblem(null);
    await enqueue(
      "startOperation",
      { orderNumber: order, sequence: op.sequence },
      `Start step ${op.sequence} of ${order}`,
      order,
    );
  }

  async function complete(event: Event) {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const data = new FormData(form);
    const good = toDecimal(String(data.get("good") ?? ""));
    const scrap = toDecimal(String(data.get("scrap") ?? "") || "0");
    const reason = String(data.get("reason") ?? "").trim();
    if (good === null || Number(good) < 0) return setProblem("Enter the good quantity (a number).");
    if (scrap === null || Number(scrap) < 0) return setProblem("The scrap quantity must be a number.");
    if (Number(scrap) > 0 && !reason) return setProblem("Scrap needs a reason: fill in “Scrap reason”.");
    setProblem(null);
    const input: Record<string, unknown> = {
      orderNumber: order,
      sequence: op.sequence,
      quantityGood: good,
      quantityScrap: scrap,
    };
    if (reason) input.scrapReason = reason;
    await enqueue("completeOperation", input, `Complete step ${op.sequence} of ${order}: ${good} good, ${scrap} scrap`, order);
    form.reset();
  }

  // "Start step": the step is READY (or PENDING with the step before done on this device,
  // which `status` already shows as READY).
  const canStart = status === "READY";
  const canComplete = status === "RUNNING";

  return (
    <section class="step card" aria-labelledby={`${id}-h`}>
      <h3 id={`${id}-h`}>
        {op.sequence} · {op.name}
      </h3>
      <p class="step-status">
        <Status value={status} />
        {local && <span class="hint"> (on this device; not confirmed yet)</span>}
      </p>
      {op.instructions && <p class="instructions">{op.instructions}</p>}
      {op.characteristics.length > 0 && (
        <p class="hint">
          Checks before completing: {op.characteristics.map((c) => c.name).join(", ")}.
        </p>
      )}
      {status === "DONE" &&
        (local && localDone ? (
          <p>
            {qty(String(localDone.input.quantityGood))} good · {qty(String(localDone.input.quantityScrap))} scrap
          </p>
        ) : (
          <p>
            {qty(op.quantityGood)} good · {qty(op.quantityScrap)} scrap
          </p>
        ))}
      {props.mine.length > 0 && (
        <ul class="oplist" aria-label={`Actions on step ${op.sequence}`}>
          {props.mine.slice(-3).reverse().map((o) => (
            <li key={o.id}>
              <span class="op-what">{o.kind === "startOperation" ? "Start" : "Complete"}:</span>{" "}
              <OpStatus op={o} dismissable />
            </li>
          ))}
        </ul>
      )}
      {problem && (
        <Notice kind="error">
          {problem}{" "}
          <button type="button" class="btn btn-plain btn-small" onClick={() => setProblem(null)}>
            OK
          </button>
        </Notice>
      )}
      {canStart && <Button onClick={() => void start()}>Start step</Button>}
      {canComplete && (
        <form class="complete" onSubmit={(e) => void complete(e)}>
          <div class="row">
            <Field label="Good quantity" id={`${id}-good`} name="good" inputMode="decimal" autoComplete="off" required />
            <Field label="Scrap quantity" id={`${id}-scrap`} name="scrap" inputMode="decimal" autoComplete="off" placeholder="0" />
          </div>
          <Field label="Scrap reason" id={`${id}-reason`} name="reason" autoComplete="off" />
          <button type="submit" class="btn btn-primary">
            Complete step
          </button>
        </form>
      )}
    </section>
  );
}

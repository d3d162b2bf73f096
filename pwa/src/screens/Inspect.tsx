// Inspecting a lot (incoming inspection): start it (through the outbox), then a field per
// characteristic and "Record results". The server numbers the inspection, so the result form
// opens once the start has been answered — or at once for an inspection already open.
import { useEffect, useRef, useState } from "preact/hooks";
import { useQuery } from "../data";
import type { Op } from "../db";
import { enqueue, ops } from "../outbox";
import { href } from "../router";
import { Age, Field, Notice, Page, Status } from "../ui";
import {
  LOT,
  OpStatus,
  characteristicLabel,
  lotKey,
  toNumber,
  type Characteristic,
  type LotAnswer,
} from "../operator/common";

type Started = { inspection?: { number: string; status: string; characteristics: Characteristic[] } | null };
type Recorded = { inspection?: { number: string; status: string } | null; deviation?: { number: string } | null };

export function Inspect(props: { args: string[] }) {
  const [active, setActive] = useState(props.args[0] ?? "");
  const [typed, setTyped] = useState(props.args[0] ?? "");
  const [problem, setProblem] = useState<string | null>(null);
  // Another lot chosen by the route (#/inspect/<lot>): start over with that one.
  const fromRoute = props.args[0] ?? "";
  const route = useRef(fromRoute);
  useEffect(() => {
    if (route.current === fromRoute) return;
    route.current = fromRoute;
    setTyped(fromRoute);
    setActive(fromRoute);
    setProblem(null);
  }, [fromRoute]);
  const lot = useQuery<LotAnswer>(lotKey(active), LOT, { number: active });
  const lotData = active ? lot.data?.lot ?? null : null;

  const mine = active ? ops.value.filter((o) => o.entity === active).reverse() : [];
  const starts = mine.filter((o) => o.kind === "startInspection");
  const latestStart: Op | undefined = starts[0];

  // Which inspection the form is for: the one my last start opened, else one already open.
  let inspection: { number: string; characteristics: Characteristic[] } | null = null;
  if (latestStart?.state === "done") {
    inspection = (latestStart.result as Started).inspection ?? null;
  } else if (!latestStart || latestStart.state !== "pending") {
    const open = lotData?.inspections.filter((i) => i.status === "OPEN").at(-1);
    if (open) inspection = open;
  }
  // Read the lot again when one of my actions on it got its answer (its status moves on).
  const answered = mine.filter((o) => o.state !== "pending").length;
  const seenAnswers = useRef(answered);
  useEffect(() => {
    if (answered !== seenAnswers.current) {
      seenAnswers.current = answered;
      if (navigator.onLine) lot.reload();
    }
  }, [answered]);

  const records = inspection
    ? mine.filter((o) => o.kind === "recordInspectionResults" && o.input.inspectionNumber === inspection!.number)
    : [];
  const finished = records
    .map((o) => (o.state === "done" ? (o.result as Recorded) : null))
    .find((r) => r?.inspection && r.inspection.status !== "OPEN");

  async function start(event: Event) {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const number = String(new FormData(form).get("lot") ?? "").trim();
    if (!number) return setProblem("Enter the lot number.");
    setProblem(null);
    setActive(number);
    await enqueue("startInspection", { lotNumber: number }, `Start inspection of lot ${number}`, number);
  }

  async function record(event: Event) {
    event.preventDefault();
    if (!inspection) return;
    const data = new FormData(event.currentTarget as HTMLFormElement);
    const results: Record<string, unknown>[] = [];
    for (const [i, c] of inspection.characteristics.entries()) {
      const raw = String(data.get(`c${i}`) ?? "");
      if (c.kind === "ATTRIBUTE") {
        if (raw === "pass" || raw === "fail") results.push({ characteristic: c.name, passed: raw === "pass" });
      } else if (raw.trim()) {
        const value = toNumber(raw);
        if (value === null) return setProblem(`“${c.name}” must be a number.`);
        results.push({ characteristic: c.name, value });
      }
    }
    if (!results.length) return setProblem("Enter at least one result.");
    setProblem(null);
    await enqueue(
      "recordInspectionResults",
      { inspectionNumber: inspection.number, results },
      `Results for inspection ${inspection.number} (lot ${active})`,
      active,
    );
  }

  return (
    <Page title="Inspection" back="#/">
      <form class="stack-form" onSubmit={(e) => void start(e)} autoComplete="off">
        <Field
          label="Lot number"
          id="insp-lot"
          name="lot"
          value={typed}
          onInput={(e) => setTyped((e.currentTarget as HTMLInputElement).value)}
          autoCapitalize="off"
          spellcheck={false}
          required
        />
        <button type="submit" class="btn btn-primary">
          Start inspection
        </button>
      </form>
      {problem && (
        <Notice kind="error">
          {problem}{" "}
          <button type="button" class="btn btn-plain btn-small" onClick={() => setProblem(null)}>
            OK
          </button>
        </Notice>
      )}
      {lotData && (
        <p class="lot-line">
          <a href={href("lot", lotData.number)}>Lot {lotData.number}</a> · {lotData.material.name} ·{" "}
          <Status value={lotData.status} />
          <Age fetchedAt={lot.fetchedAt} offline={lot.offline} />
        </p>
      )}
      {starts.length > 0 && (
        <ul class="oplist" aria-label="Inspection actions">
          {starts.slice(0, 3).map((o) => (
            <li key={o.id}>
              Start inspection: <OpStatus op={o} dismissable />
            </li>
          ))}
        </ul>
      )}
      {latestStart?.state === "pending" && (
        <p class="hint">The result form opens when the server has opened the inspection.</p>
      )}
      {inspection && (
        <section aria-labelledby="insp-h" class="card">
          <h2 id="insp-h">Results for {inspection.number}</h2>
          {!finished && (
            <form onSubmit={(e) => void record(e)} autoComplete="off" key={inspection.number}>
              {inspection.characteristics.map((c, i) =>
                c.kind === "ATTRIBUTE" ? (
                  <fieldset key={c.name} class="field passfail">
                    <legend>{characteristicLabel(c)}</legend>
                    <label class="radio">
                      <input type="radio" name={`c${i}`} value="pass" /> Pass
                    </label>
                    <label class="radio">
                      <input type="radio" name={`c${i}`} value="fail" /> Fail
                    </label>
                  </fieldset>
                ) : (
                  <Field
                    key={c.name}
                    label={characteristicLabel(c)}
                    id={`insp-c${i}`}
                    name={`c${i}`}
                    inputMode="decimal"
                  />
                ),
              )}
              <button type="submit" class="btn btn-primary">
                Record results
              </button>
            </form>
          )}
          {records.length > 0 && (
            <ul class="oplist" aria-live="polite" aria-label="Results sent">
              {records.slice(0, 3).map((o) => {
                const r = o.state === "done" ? (o.result as Recorded) : null;
                return (
                  <li key={o.id}>
                    Results: <OpStatus op={o} dismissable />
                    {r?.inspection && (
                      <>
                        {" "}
                        <Status value={r.inspection.status} />
                      </>
                    )}
                    {r?.deviation && (
                      <>
                        {" "}
                        Deviation raised:{" "}
                        <a href={href("deviation", r.deviation.number)}>{r.deviation.number}</a>
                      </>
                    )}
                  </li>
                );
              })}
            </ul>
          )}
        </section>
      )}
    </Page>
  );
}

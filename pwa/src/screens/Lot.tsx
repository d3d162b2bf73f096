// One lot: material, what is left, status, expiry, its inspections and deviations. Read from the
// server, or from the device's copy (with its age) when offline.
import { useEffect } from "preact/hooks";
import { useQuery } from "../data";
import { subscribe } from "../live";
import { href } from "../router";
import { Page, ReadState, Status } from "../ui";
import { LOT, formatDate, formatTime, lotKey, qty, type LotAnswer } from "../operator/common";

export function LotScreen(props: { args: string[] }) {
  const number = props.args[0] ?? "";
  const lot = useQuery<LotAnswer>(lotKey(number), LOT, { number });
  const data = lot.data?.lot ?? null;
  useEffect(
    () =>
      subscribe("subscription ($n: String) { lotChanged(number: $n) { number } }", { n: number }, () =>
        lot.reload(), () => lot.reload(),
      ),
    [number],
  );
  const expired = data?.expiresAt ? Date.parse(data.expiresAt) < Date.now() : false;

  return (
    <Page title={`Lot ${number}`} back="#/">
      <ReadState read={lot} found={!!data} what="lot" name={number} />
      {data && (
        <>
          <dl class="op-facts">
            <div>
              <dt>Material</dt>
              <dd>
                {data.material.name} ({data.material.code})
              </dd>
            </div>
            <div>
              <dt>Quantity</dt>
              <dd>
                {qty(data.quantity)} {data.material.unit}
              </dd>
            </div>
            <div>
              <dt>Status</dt>
              <dd>
                <Status value={data.status} />
              </dd>
            </div>
            <div>
              <dt>Expiry</dt>
              <dd>
                {data.expiresAt ? formatDate(data.expiresAt) : "none"}
                {expired && " (past its expiry)"}
              </dd>
            </div>
            {data.supplierLot && (
              <div>
                <dt>Supplier lot</dt>
                <dd>{data.supplierLot}</dd>
              </div>
            )}
            {data.producedBy && (
              <div>
                <dt>Made by</dt>
                <dd>
                  <a href={href("order", data.producedBy.number)}>{data.producedBy.number}</a>
                </dd>
              </div>
            )}
          </dl>
          {data.status === "QUARANTINE" && (
            <a class="btn btn-primary linkbtn" href={href("inspect", data.number)}>
              Inspect this lot
            </a>
          )}
          <section aria-labelledby="lot-dev-h">
            <h2 id="lot-dev-h">Deviations</h2>
            {data.deviations.length === 0 ? (
              <p>None.</p>
            ) : (
              <ul class="list">
                {data.deviations.map((d) => (
                  <li key={d.number}>
                    <a class="card" href={href("deviation", d.number)}>
                      {d.number} · {d.title} <Status value={d.status} /> <span class="hint">{d.severity}</span>
                    </a>
                  </li>
                ))}
              </ul>
            )}
          </section>
          <section aria-labelledby="lot-insp-h">
            <h2 id="lot-insp-h">Inspections</h2>
            {data.inspections.length === 0 ? (
              <p>None.</p>
            ) : (
              <ul class="list">
                {data.inspections.map((i) => (
                  <li key={i.number} class="card">
                    {i.number} <Status value={i.status} />{" "}
                    <span class="hint">{formatTime(i.completedAt ?? i.createdAt)}</span>
                    {i.results.length > 0 && (
                      <ul class="results">
                        {i.results.map((r) => (
                          <li key={r.characteristic.name}>
                            {r.characteristic.name}: {r.value ?? ""} {r.passed ? "pass" : "FAIL"}
                          </li>
                        ))}
                      </ul>
                    )}
                  </li>
                ))}
              </ul>
            )}
          </section>
        </>
      )}
    </Page>
  );
}

// The supervisors' inbox: OPEN deviations first, then the latest decided ones. Live: every
// `deviationChanged` event (and coming back online) reads the lists again.
import { useEffect } from "preact/hooks";
import { useQuery } from "../data";
import { subscribe } from "../live";
import { href } from "../router";
import { Age, Notice, Page, Status } from "../ui";

type Row = {
  number: string;
  title: string;
  severity: string;
  status: string;
  raisedAt: string;
  lots: { number: string }[];
};
type Inbox = {
  open: { totalCount: number; edges: { node: Row }[] };
  decided: { edges: { node: Row }[] };
};

const ROW = "number title severity status raisedAt lots { number }";
const INBOX = `query DeviationInbox {
  open: deviations(status: [OPEN], first: 100) { totalCount edges { node { ${ROW} } } }
  decided: deviations(status: [APPROVED, REJECTED], first: 20) { edges { node { ${ROW} } } }
}`;
const CHANGED = "subscription DeviationsChanged { deviationChanged { number status } }";

/** Reloads `reload` on each `deviationChanged` event and when the network is back. */
export function useDeviationEvents(onEvent: (number: string) => void): void {
  useEffect(() => {
    const back = () => onEvent("");
    const stop = subscribe<{ deviationChanged: { number: string } }>(
      CHANGED,
      {},
      (data) => onEvent(data.deviationChanged.number),
      back,
    );
    addEventListener("online", back);
    return () => {
      stop();
      removeEventListener("online", back);
    };
  }, [onEvent]);
}

function DeviationRow({ row }: { row: Row }) {
  return (
    <li class="card deviation-row">
      <a href={href("deviation", row.number)}>
        {row.number} · {row.title}
      </a>
      <p class="meta">
        <Status value={row.status} /> <span class="severity">{row.severity}</span>{" "}
        {row.lots.length > 0 && <span>Lots: {row.lots.map((l) => l.number).join(", ")}</span>}
        <span class="when"> Raised {new Date(row.raisedAt).toLocaleString()}</span>
      </p>
    </li>
  );
}

export function Deviations(_props: { args: string[] }) {
  const inbox = useQuery<Inbox>("deviations", INBOX);
  useDeviationEvents(inbox.reload);
  const open = inbox.data?.open.edges.map((e) => e.node) ?? [];
  const decided = inbox.data?.decided.edges.map((e) => e.node) ?? [];
  return (
    <Page title="Deviations" back="#/">
      <Age fetchedAt={inbox.fetchedAt} offline={inbox.offline} />
      {inbox.error && <Notice kind="error">Could not read the deviations: {inbox.error}</Notice>}
      <section aria-labelledby="open-deviations">
        <h2 id="open-deviations">Open ({inbox.data?.open.totalCount ?? open.length})</h2>
        {inbox.loading && !inbox.data && <p>Loading…</p>}
        {inbox.data && open.length === 0 && <p>No open deviations. Nothing waits for a decision.</p>}
        <ul class="list">
          {open.map((row) => (
            <DeviationRow key={row.number} row={row} />
          ))}
        </ul>
      </section>
      {decided.length > 0 && (
        <section aria-labelledby="decided-deviations">
          <h2 id="decided-deviations">Decided recently</h2>
          <ul class="list">
            {decided.map((row) => (
              <DeviationRow key={row.number} row={row} />
            ))}
          </ul>
        </section>
      )}
    </Page>
  );
}

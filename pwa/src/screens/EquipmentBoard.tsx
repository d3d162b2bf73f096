// The machine board: every work center with its machines and their current state. Live: each
// `equipmentStateChanged` event replaces that one machine; a machine the board does not know
// yet (or coming back online) reads the whole board again.
import { useEffect, useState } from "preact/hooks";
import { useQuery } from "../data";
import { subscribe } from "../live";
import { Age, Notice, Page, Status } from "../ui";

type Machine = {
  code: string;
  name: string;
  state: string;
  stateReason: string | null;
  stateSince: string | null;
};
type Board = { workCenters: { code: string; name: string; equipment: Machine[] }[] };

const MACHINE = "code name state stateReason stateSince";
const BOARD = `query MachineBoard { workCenters { code name equipment { ${MACHINE} } } }`;
const CHANGED = `subscription MachineChanged { equipmentStateChanged { ${MACHINE} } }`;

function since(iso: string | null): string {
  if (!iso) return "";
  const at = new Date(iso);
  const sameDay = at.toDateString() === new Date().toDateString();
  return sameDay ? at.toLocaleTimeString() : at.toLocaleString();
}

export function EquipmentBoard(_props: { args: string[] }) {
  const board = useQuery<Board>("equipmentBoard", BOARD);
  const { reload, fetchedAt } = board;
  // Machines updated by events since the board was last read, by code.
  const [live, setLive] = useState<Record<string, Machine & { changedAt: number }>>({});
  useEffect(() => setLive({}), [fetchedAt]);

  const known = new Set(board.data?.workCenters.flatMap((wc) => wc.equipment.map((m) => m.code)));
  const knownKey = [...known].sort().join(",");
  useEffect(() => {
    const stop = subscribe<{ equipmentStateChanged: Machine }>(CHANGED, {}, (data) => {
      const machine = data.equipmentStateChanged;
      if (!known.has(machine.code)) return reload();
      setLive((current) => ({ ...current, [machine.code]: { ...machine, changedAt: Date.now() } }));
    }, reload);
    addEventListener("online", reload);
    return () => {
      stop();
      removeEventListener("online", reload);
    };
    // `known` is rebuilt each render; `knownKey` is its content.
  }, [knownKey, reload]);

  return (
    <Page title="Machines" back="#/">
      <Age fetchedAt={fetchedAt} offline={board.offline} />
      {board.error && <Notice kind="error">Could not read the machines: {board.error}</Notice>}
      {board.loading && !board.data && <p>Loading…</p>}
      {board.data?.workCenters.map((wc) => (
        <section key={wc.code} class="machines" aria-labelledby={`wc-${wc.code}`}>
          <h2 id={`wc-${wc.code}`}>
            {wc.code} · {wc.name}
          </h2>
          {wc.equipment.length === 0 ? (
            <p>No machines.</p>
          ) : (
            <ul class="list">
              {wc.equipment.map((stored) => {
                const updated = live[stored.code];
                const m = updated ?? stored;
                return (
                  <li key={m.code} class="card machine" data-code={m.code}>
                    <p class="machine-name">
                      <strong>{m.code}</strong> {m.name}
                    </p>
                    <p class="machine-state">
                      <Status value={m.state} />
                      {m.stateReason && <span class="reason"> {m.stateReason}</span>}
                      {m.stateSince && <span class="since"> since {since(m.stateSince)}</span>}
                    </p>
                  </li>
                );
              })}
            </ul>
          )}
        </section>
      ))}
      {board.data && board.data.workCenters.length === 0 && <p>No work centers yet.</p>}
    </Page>
  );
}

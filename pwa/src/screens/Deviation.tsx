// One deviation: what happened, which lots, the inspection, the signatures — and, for supervisors
// and quality staff while it is OPEN, the decision with an electronic signature.
// Signing is an online act (21 CFR 11.200): the server checks the password again at the moment
// of signing. It is sent directly, never through the outbox; offline nothing is signed.
import { useCallback, useState } from "preact/hooks";
import { AuthError, NetworkError, newId, request, type MutationError } from "../api";
import { useQuery } from "../data";
import { href } from "../router";
import { user } from "../session";
import { Age, Button, Field, Notice, Page, Status } from "../ui";
import { useDeviationEvents } from "./Deviations";

type Person = { username: string; displayName: string };
type Detail = {
  number: string;
  title: string;
  description: string | null;
  severity: string;
  status: string;
  source: string;
  disposition: string | null;
  raisedAt: string;
  raisedBy: Person;
  lots: { number: string; status: string; material: { code: string; name: string } }[];
  order: { number: string } | null;
  inspection: {
    number: string;
    status: string;
    results: {
      characteristic: { name: string; unit: string | null };
      value: number | null;
      passed: boolean;
      note: string | null;
    }[];
  } | null;
  signatures: { signer: Person; meaning: string; reason: string | null; signedAt: string }[];
};

const FIELDS = `number title description severity status source disposition raisedAt
  raisedBy { username displayName }
  lots { number status material { code name } }
  order { number }
  inspection { number status results { characteristic { name unit } value passed note } }
  signatures { signer { username displayName } meaning reason signedAt }`;
const DEVIATION = `query Deviation($number: String!) { deviation(number: $number) { ${FIELDS} } }`;
const APPROVE = `mutation ApproveDeviation($input: DecideDeviationInput!) {
  approveDeviation(input: $input) { deviation { number status } errors { code message field } }
}`;
const REJECT = `mutation RejectDeviation($input: DecideDeviationInput!) {
  rejectDeviation(input: $input) { deviation { number status } errors { code message field } }
}`;

const DISPOSITIONS: [string, string][] = [
  ["USE_AS_IS", "Use as is"],
  ["REWORK", "Rework"],
  ["SCRAP", "Scrap"],
  ["RETURN_TO_SUPPLIER", "Return to supplier"],
];
export const OFFLINE_SIGNING = "Signing needs the network. Nothing was signed.";

const when = (iso: string) => new Date(iso).toLocaleString();

type Outcome = { kind: "error"; lines: string[] };

function Decide({ deviation, onSigned }: { deviation: Detail; onSigned: (message: string) => void }) {
  const [disposition, setDisposition] = useState("");
  const [meaning, setMeaning] = useState("Approved");
  const [meaningEdited, setMeaningEdited] = useState(false);
  const [reason, setReason] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcome] = useState<Outcome | null>(null);
  const selfRaised = user.value?.username === deviation.raisedBy.username;

  async function sign(approve: boolean) {
    // The default meaning follows the button pressed unless the signer wrote their own.
    const said = meaningEdited ? meaning.trim() : approve ? "Approved" : "Rejected";
    if (!meaningEdited) setMeaning(said);
    if (!navigator.onLine) {
      setOutcome({ kind: "error", lines: [OFFLINE_SIGNING] });
      return;
    }
    const missing: string[] = [];
    if (approve && !disposition) missing.push("Choose a disposition: it says what happens to the lots.");
    if (!said) missing.push("Write the meaning of your signature.");
    if (!reason.trim()) missing.push("Write the reason for your decision.");
    if (!password) missing.push("Enter your password to sign.");
    if (missing.length) {
      setOutcome({ kind: "error", lines: missing });
      return;
    }
    setBusy(true);
    setOutcome(null);
    type Payload = { deviation: { number: string; status: string } | null; errors: MutationError[] };
    try {
      const result = await request<Record<string, Payload>>(approve ? APPROVE : REJECT, {
        input: {
          clientMutationId: newId(),
          number: deviation.number,
          disposition: approve ? disposition : disposition || null,
          signature: { password, meaning: said, reason: reason.trim() },
        },
      });
      const payload = result.data?.[approve ? "approveDeviation" : "rejectDeviation"];
      if (!payload) {
        setOutcome({
          kind: "error",
          lines: (result.errors ?? [{ message: "the server gave no answer" }]).map(
            (e) => `Not signed: ${e.message}`,
          ),
        });
      } else if (payload.errors.length) {
        setPassword("");
        setOutcome({
          kind: "error",
          lines: payload.errors.map((e) => `Not signed (${e.code}): ${e.message}`),
        });
      } else {
        setPassword("");
        onSigned(
          `Signed "${said}" as ${user.value?.displayName ?? user.value?.username}. ` +
            `The deviation is now ${payload.deviation?.status ?? "decided"}.`,
        );
      }
    } catch (error) {
      if (error instanceof NetworkError) setOutcome({ kind: "error", lines: [OFFLINE_SIGNING] });
      else if (error instanceof AuthError)
        setOutcome({ kind: "error", lines: ["Your session has ended: sign in again. Nothing was signed."] });
      else setOutcome({ kind: "error", lines: [`Not signed: ${String(error)}`] });
    } finally {
      setBusy(false);
    }
  }

  return (
    <section aria-labelledby="decide-heading" class="decide">
      <h2 id="decide-heading">Decide and sign</h2>
      {selfRaised && (
        <Notice kind="info">You raised this deviation: another person has to decide it.</Notice>
      )}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          const submitter = (e as SubmitEvent).submitter as HTMLButtonElement | null;
          void sign(submitter?.value !== "reject");
        }}
      >
        <div class="field">
          <label for="disposition">Disposition</label>
          <select
            id="disposition"
            aria-describedby="disposition-hint"
            value={disposition}
            onChange={(e) => setDisposition((e.currentTarget as HTMLSelectElement).value)}
          >
            <option value="">— choose —</option>
            {DISPOSITIONS.map(([value, label]) => (
              <option key={value} value={value}>
                {label}
              </option>
            ))}
          </select>
          <p class="hint" id="disposition-hint">
            Needed to approve: what happens to the lots.
          </p>
        </div>
        <Field
          id="meaning"
          label="Meaning"
          hint='Recorded with your signature; "Approved" or "Rejected" by the button you press unless you change it.'
          value={meaning}
          onInput={(e) => {
            setMeaning(e.currentTarget.value);
            setMeaningEdited(true);
          }}
          autocomplete="off"
        />
        <div class="field">
          <label for="reason">Reason</label>
          <textarea
            id="reason"
            value={reason}
            onInput={(e) => setReason((e.currentTarget as HTMLTextAreaElement).value)}
          />
        </div>
        <Field
          id="signing-password"
          label="Password"
          type="password"
          autocomplete="current-password"
          hint="Your own password, asked again to sign. It is not stored."
          value={password}
          onInput={(e) => setPassword(e.currentTarget.value)}
        />
        {outcome && (
          <Notice kind={outcome.kind}>
            {outcome.lines.map((line) => (
              <p key={line} class="notice-line">
                {line}
              </p>
            ))}
          </Notice>
        )}
        <div class="row decide-buttons">
          <Button type="submit" value="approve" disabled={busy}>
            Approve
          </Button>
          <Button type="submit" value="reject" kind="danger" disabled={busy}>
            Reject
          </Button>
        </div>
        {busy && <p role="status">Signing…</p>}
      </form>
    </section>
  );
}

export function Deviation({ args }: { args: string[] }) {
  const number = args[0] ?? "";
  return <DeviationView key={number} number={number} />;
}

function DeviationView({ number }: { number: string }) {
  const loaded = useQuery<{ deviation: Detail | null }>(`deviation:${number}`, DEVIATION, { number });
  const { reload } = loaded;
  const [signed, setSigned] = useState<string | null>(null);
  useDeviationEvents(
    useCallback((changed: string) => (!changed || changed === number) && reload(), [number, reload]),
  );
  const d = loaded.data?.deviation;
  const roles = user.value?.roles ?? [];
  const mayDecide = roles.includes("SUPERVISOR") || roles.includes("QUALITY");
  return (
    <Page title={`Deviation ${number}`} back="#/deviations">
      <Age fetchedAt={loaded.fetchedAt} offline={loaded.offline} />
      {loaded.error && <Notice kind="error">Could not read the deviation: {loaded.error}</Notice>}
      {loaded.loading && !loaded.data && <p>Loading…</p>}
      {loaded.data && !d && <Notice kind="error">There is no deviation {number}.</Notice>}
      {d && (
        <>
          <p class="deviation-title">
            <strong>{d.title}</strong>
          </p>
          <dl class="facts">
            <dt>Status</dt>
            <dd>
              <Status value={d.status} />
              {d.disposition && ` — ${d.disposition.replace(/_/g, " ")}`}
            </dd>
            <dt>Severity</dt>
            <dd>{d.severity}</dd>
            <dt>Raised</dt>
            <dd>
              {when(d.raisedAt)} by {d.raisedBy.displayName} ({d.source.toLowerCase()})
            </dd>
            {d.order && (
              <>
                <dt>Order</dt>
                <dd>
                  <a class="inline-target" href={href("order", d.order.number)}>
                    {d.order.number}
                  </a>
                </dd>
              </>
            )}
          </dl>
          {d.description && <p class="description">{d.description}</p>}
          <h2>Lots</h2>
          {d.lots.length === 0 ? (
            <p>No lots.</p>
          ) : (
            <ul class="list deviation-lots">
              {d.lots.map((lot) => (
                <li key={lot.number}>
                  <a href={href("lot", lot.number)}>{lot.number}</a> <Status value={lot.status} />{" "}
                  {lot.material.code} · {lot.material.name}
                </li>
              ))}
            </ul>
          )}
          {d.inspection && (
            <>
              <h2>Inspection {d.inspection.number}</h2>
              <p>
                <Status value={d.inspection.status} />
              </p>
              <ul class="list">
                {d.inspection.results.map((r) => (
                  <li key={r.characteristic.name}>
                    {r.characteristic.name}:{" "}
                    {r.value !== null ? `${r.value}${r.characteristic.unit ? ` ${r.characteristic.unit}` : ""}` : ""}{" "}
                    <Status value={r.passed ? "PASSED" : "FAILED"} />
                    {r.note && ` — ${r.note}`}
                  </li>
                ))}
              </ul>
            </>
          )}
          <h2>Signatures</h2>
          {d.signatures.length === 0 ? (
            <p>Not signed yet.</p>
          ) : (
            <ul class="list">
              {d.signatures.map((s) => (
                <li key={s.signedAt + s.signer.username} class="signature">
                  <strong>{s.meaning}</strong> — {s.signer.displayName} ({s.signer.username}),{" "}
                  {when(s.signedAt)}
                  {s.reason && <span class="reason">. Reason: {s.reason}</span>}
                </li>
              ))}
            </ul>
          )}
          {signed && <Notice kind="ok">{signed}</Notice>}
          {d.status === "OPEN" && mayDecide && (
            <Decide
              key={d.number}
              deviation={d}
              onSigned={(message) => {
                setSigned(message);
                reload();
              }}
            />
          )}
        </>
      )}
    </Page>
  );
}

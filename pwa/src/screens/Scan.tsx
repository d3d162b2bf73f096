// Scanning material into an order. A keyboard-wedge scanner types into "Scan code" and sends
// Enter; the scan is written to the device's outbox and the operator hears/sees "saved" at
// once (no waiting for the network). The server's answer shows up in the list when it comes;
// a refusal beeps the error sound and stays until dismissed.
import { useEffect, useRef, useState } from "preact/hooks";
import { useQuery } from "../data";
import type { Op } from "../db";
import { feedback, unlockAudio } from "../feedback";
import { enqueue, ops } from "../outbox";
import { href } from "../router";
import { CameraButton } from "../scan/CameraButton";
import { workCenter } from "../session";
import { Age, Notice, Page, Status } from "../ui";
import { MY_ORDERS, OpStatus, myOrdersKey, qty, type MyOrders } from "../operator/common";

/** A wedge cannot type ASCII 29 (GS); scanners are set to send "|" instead. */
const GS = "\x1d";
const shown = (code: string) => code.split(GS).join("|");

type ScanResult = {
  lot?: { number: string; status: string; quantity: string; material: { code: string; name: string; unit: string } } | null;
  consumption?: { quantity: string } | null;
};

export function Scan(props: { args: string[] }) {
  const given = props.args[0] ?? "";
  const wc = workCenter.value;
  const orders = useQuery<MyOrders>(myOrdersKey(wc), MY_ORDERS, { wc });
  const list = orders.data?.productionOrders.edges.map((e) => e.node) ?? [];
  const [chosen, setChosen] = useState("");
  const [problem, setProblem] = useState<string | null>(null);
  const input = useRef<HTMLInputElement>(null);
  const orderNumber = given || chosen || (list.length === 1 ? list[0].number : "");

  const refocus = () => {
    // Not while the operator is working another control (the order select, a button).
    const active = document.activeElement;
    if (!active || active === document.body || active === input.current) input.current?.focus();
  };
  useEffect(() => {
    input.current?.focus();
    const onVisible = () => document.visibilityState === "visible" && refocus();
    document.addEventListener("visibilitychange", onVisible);
    addEventListener("focus", refocus);
    return () => {
      document.removeEventListener("visibilitychange", onVisible);
      removeEventListener("focus", refocus);
    };
  }, []);

  // After every change on screen (a dismissed row took the focus with it): back to the field.
  useEffect(() => {
    if (document.activeElement === document.body) input.current?.focus();
  });

  const scans = ops.value.filter((o) => o.kind === "scanLot" && o.entity === orderNumber).reverse();

  // A refusal coming back from the server while this screen is open: the error sound, once per
  // scan (not for refusals that came back earlier, which the list shows anyway).
  const opened = useRef(new Date().toISOString());
  const signalled = useRef(new Set<string>());
  const refusedIds = scans
    .filter((o) => o.state === "refused" && (o.doneAt ?? "") >= opened.current)
    .map((o) => o.id);
  useEffect(() => {
    let fresh = false;
    for (const id of refusedIds) {
      if (!signalled.current.has(id)) {
        signalled.current.add(id);
        fresh = true;
      }
    }
    if (fresh) feedback(false);
  }, [refusedIds.join(",")]);

  async function submitCode(raw: string, source: "wedge" | "camera") {
    const code = raw.replace(/\|/g, GS).replace(/[\r\n]+$/, "").trim();
    if (!code) return;
    if (!orderNumber) {
      feedback(false);
      setProblem("Choose the order first, then scan again.");
      return;
    }
    setProblem(null);
    await enqueue(
      "scanLot",
      { code, orderNumber, scannedAt: new Date().toISOString() },
      `Scan ${shown(code)} for ${orderNumber}${source === "camera" ? " (camera)" : ""}`,
      orderNumber,
    );
    feedback(true); // saved on the device: the operator can go on
  }

  function onSubmit(event: Event) {
    event.preventDefault();
    unlockAudio();
    const field = input.current!;
    const raw = field.value;
    field.value = ""; // at once, so the next scan's keys land in an empty field
    field.focus();
    void submitCode(raw, "wedge");
  }

  return (
    <Page title="Scan" back={given ? href("order", given) : "#/"}>
      {!given && (
        <div class="field">
          <label for="scan-order">Order</label>
          <select
            id="scan-order"
            value={orderNumber}
            onChange={(e) => {
              setChosen((e.currentTarget as HTMLSelectElement).value);
              setTimeout(() => input.current?.focus(), 0);
            }}
          >
            <option value="">— choose —</option>
            {list.map((o) => (
              <option key={o.number} value={o.number}>
                {o.number} · {o.product.name}
              </option>
            ))}
          </select>
          <Age fetchedAt={orders.fetchedAt} offline={orders.offline} />
          {!wc && (
            <p class="hint">
              No work center set: <a href="#/settings">Choose this device's work center</a>
            </p>
          )}
        </div>
      )}
      {given && <p class="scan-for">For order <strong>{given}</strong></p>}
      <form class="scan-form" onSubmit={onSubmit} autoComplete="off">
        <div class="field">
          <label for="scan-code">Scan code</label>
          <input
            ref={input}
            id="scan-code"
            name="code"
            autoComplete="off"
            autoCapitalize="off"
            autoCorrect="off"
            spellcheck={false}
            enterKeyHint="done"
            aria-describedby="scan-code-hint"
            onBlur={(e) => {
              // Focus went nowhere (a tap on the page, a closed dialog): take it back.
              if (!e.relatedTarget) setTimeout(refocus, 0);
            }}
          />
          <p class="hint" id="scan-code-hint">
            Scan a lot label, or type the lot number and press Enter.
          </p>
        </div>
      </form>
      {problem && (
        <Notice kind="error">
          {problem}{" "}
          <button
            type="button"
            class="btn btn-plain btn-small"
            onClick={() => {
              setProblem(null);
              input.current?.focus();
            }}
          >
            OK
          </button>
        </Notice>
      )}
      <CameraButton
        onCode={(code) => {
          unlockAudio();
          void submitCode(code, "camera").then(() => input.current?.focus());
        }}
      />
      <section class="scans" aria-label="Scans of this order">
        {/* Not a heading: "Scan" must stay the only heading with that word. */}
        <p class="list-title">Scans on this device</p>
        {orderNumber && scans.length === 0 && <p class="hint">No scans for {orderNumber} on this device yet.</p>}
        <ul class="list" aria-live="polite" aria-label="Scans">
          {scans.slice(0, 50).map((o) => (
            <ScanRow key={o.id} op={o} />
          ))}
        </ul>
      </section>
    </Page>
  );
}

function ScanRow(props: { op: Op }) {
  const { op } = props;
  const result = (op.state === "done" ? op.result : null) as ScanResult | null;
  const lot = result?.lot;
  return (
    <li class={`card scan scan-${op.state}`}>
      <span class="scan-code">{shown(String(op.input.code ?? ""))}</span>
      <OpStatus op={op} dismissable />
      {lot && (
        <span class="scan-lot">
          Lot <a href={href("lot", lot.number)}>{lot.number}</a> <Status value={lot.status} />
          {result?.consumption && (
            <>
              {" "}
              · consumed {qty(result.consumption.quantity)} {lot.material.unit}
            </>
          )}
          <span class="hint"> {lot.material.name}</span>
        </span>
      )}
    </li>
  );
}

// "My work": the released and running orders of this device's work center. Opening it online
// also stores on the device what a scan needs (each order with its components and steps) and
// the materials list, so the line keeps working when the network drops.
import { useEffect } from "preact/hooks";
import { cachedQuery, useQuery } from "../data";
import { ops } from "../outbox";
import { href } from "../router";
import { isSupervisor, workCenter } from "../session";
import { Age, Notice, Page, Status } from "../ui";
import { MATERIALS, MY_ORDERS, myOrdersKey, qty, storeOrders, type MyOrders } from "../operator/common";

export function Home(_props: { args: string[] }) {
  const wc = workCenter.value;
  const orders = useQuery<MyOrders>(myOrdersKey(wc), MY_ORDERS, { wc });
  const list = orders.data?.productionOrders.edges.map((e) => e.node) ?? [];

  // Fresh from the server: keep each order on the device for the order and scan screens.
  useEffect(() => {
    if (wc && orders.data && !orders.offline) void storeOrders(list);
  }, [orders.data, orders.offline]);
  // The materials list (for receiving) once a visit, when online.
  useEffect(() => {
    if (navigator.onLine) void cachedQuery("materials", MATERIALS).catch(() => undefined);
  }, []);

  const waiting = (order: string) =>
    ops.value.filter((o) => o.entity === order && o.state === "pending").length;

  return (
    <Page title="My work">
      {!wc ? (
        <Notice kind="info">
          No work center is set for this device.{" "}
          <a href="#/settings">Choose this device's work center</a>
        </Notice>
      ) : (
        <section aria-labelledby="orders-h" class="orders">
          <h2 id="orders-h">Orders at {wc}</h2>
          <Age fetchedAt={orders.fetchedAt} offline={orders.offline} />
          {orders.loading && !orders.data && <p>Loading…</p>}
          {orders.error && <Notice kind="error">Could not read the orders: {orders.error}</Notice>}
          {orders.offline && !orders.data && (
            <Notice kind="warn">
              Offline, and the orders were never read on this device. Open this screen once
              online.
            </Notice>
          )}
          {orders.data && list.length === 0 && <p>No released orders at {wc}.</p>}
          <ul class="list">
            {list.map((o) => {
              const n = waiting(o.number);
              return (
                <li key={o.number}>
                  <a class="card order-card" href={href("order", o.number)}>
                    <strong class="order-no">{o.number}</strong>
                    <span class="order-product">
                      {o.product.name} · {qty(o.quantity)} {o.product.unit}
                    </span>
                    <span class="order-meta">
                      <Status value={o.status} />
                      {n > 0 && <span class="waiting-count"> {n} not sent yet</span>}
                    </span>
                  </a>
                </li>
              );
            })}
          </ul>
        </section>
      )}
      <nav class="actions" aria-label="Tasks">
        <a class="btn btn-plain linkbtn" href="#/receive">
          Receive a lot
        </a>
        <a class="btn btn-plain linkbtn" href="#/inspect">
          Inspect a lot
        </a>
        <a class="btn btn-plain linkbtn" href="#/raise">
          Raise a deviation
        </a>
        {isSupervisor.value && (
          <>
            <a class="btn btn-plain linkbtn" href="#/deviations">
              Deviations
            </a>
            <a class="btn btn-plain linkbtn" href="#/equipment">
              Machines
            </a>
          </>
        )}
      </nav>
    </Page>
  );
}

import { closeLive } from "../live";
import { pending } from "../outbox";
import { useQuery } from "../data";
import { signOut, user, workCenter } from "../session";
import { Age, Button, Notice, Page } from "../ui";

const WORK_CENTERS = "{ workCenters { code name } }";

export function Settings() {
  const centers = useQuery<{ workCenters: { code: string; name: string }[] }>(
    "workCenters",
    WORK_CENTERS,
  );
  const unsent = pending.value.length;
  return (
    <Page title="This device" back="#/">
      <div class="field">
        <label for="work-center">Work center of this device</label>
        <select
          id="work-center"
          value={workCenter.value ?? ""}
          onChange={(e) => (workCenter.value = (e.currentTarget as HTMLSelectElement).value || null)}
        >
          <option value="">— choose —</option>
          {(centers.data?.workCenters ?? []).map((wc) => (
            <option key={wc.code} value={wc.code}>
              {wc.code} · {wc.name}
            </option>
          ))}
        </select>
        <Age fetchedAt={centers.fetchedAt} offline={centers.offline} />
      </div>
      <p>
        Signed in as <strong>{user.value?.displayName}</strong> ({user.value?.username}).
      </p>
      {unsent > 0 && (
        <Notice kind="warn">
          {unsent} action{unsent === 1 ? " is" : "s are"} not sent yet. They are sent when you (or
          the same user) sign in again on this device.
        </Notice>
      )}
      <Button
        kind="danger"
        onClick={() => {
          closeLive();
          signOut();
        }}
      >
        Sign out
      </Button>
    </Page>
  );
}

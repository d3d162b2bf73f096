// Shared building blocks: every screen is a <Page> with a heading; inputs have visible labels;
// buttons are large (56 px) and named; status is told by word and colour.
import type { ButtonHTMLAttributes, ComponentChildren, InputHTMLAttributes } from "preact";
import { useEffect, useRef } from "preact/hooks";

export function Page(props: { title: string; children: ComponentChildren; back?: string }) {
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${props.title} · MES`;
  }, [props.title]);
  return (
    <main id="main" class="page" aria-labelledby="page-title">
      {props.back && (
        <a class="back" href={props.back}>
          ‹ Back
        </a>
      )}
      <h1 id="page-title" ref={heading} tabIndex={-1}>
        {props.title}
      </h1>
      {props.children}
    </main>
  );
}

type FieldProps = InputHTMLAttributes<HTMLInputElement> & { label: string; id: string; hint?: string };

export function Field({ label, id, hint, ...input }: FieldProps) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <input id={id} aria-describedby={hint ? `${id}-hint` : undefined} {...input} />
      {hint && (
        <p class="hint" id={`${id}-hint`}>
          {hint}
        </p>
      )}
    </div>
  );
}

export function Button(
  props: ButtonHTMLAttributes<HTMLButtonElement> & { kind?: "primary" | "danger" | "plain" },
) {
  const { kind = "primary", class: cls, ...rest } = props;
  return <button type="button" class={`btn btn-${kind} ${cls ?? ""}`} {...rest} />;
}

/** A message that stays until read: role=alert for errors, status for the rest. */
export function Notice(props: { kind: "error" | "ok" | "info" | "warn"; children: ComponentChildren }) {
  return (
    <div class={`notice notice-${props.kind}`} role={props.kind === "error" ? "alert" : "status"}>
      {props.children}
    </div>
  );
}

const STATUS_WORDS: Record<string, string> = {
  AVAILABLE: "OK",
  QUARANTINE: "QUARANTINE",
  ON_HOLD: "HOLD",
  REJECTED: "REJECTED",
  EXPIRED: "EXPIRED",
  CONSUMED: "CONSUMED",
};

/** A status as a word in a coloured pill (colour is never the only signal). */
export function Status(props: { value: string }) {
  const word = STATUS_WORDS[props.value] ?? props.value.replace(/_/g, " ");
  return <span class={`status status-${props.value.toLowerCase()}`}>{word}</span>;
}

/** "as of 06:12" for data read from the device's cache. */
export function Age(props: { fetchedAt: string | null; offline?: boolean }) {
  if (!props.fetchedAt) return null;
  const at = new Date(props.fetchedAt);
  return (
    <p class="age">
      {props.offline ? "Offline — " : ""}as of {at.toLocaleString()}
    </p>
  );
}

/** How a read of one thing went: its age, "Loading…", a read error, or "there is no such
 * thing" (offline: "not on this device yet"). */
export function ReadState(props: {
  read: { fetchedAt: string | null; offline: boolean; error: string | null; loading: boolean };
  found: boolean;
  what: string;
  name: string;
}) {
  const { read, found, what, name } = props;
  return (
    <>
      <Age fetchedAt={read.fetchedAt} offline={read.offline} />
      {read.loading && !found && <p>Loading…</p>}
      {read.error && (
        <Notice kind="error">
          Could not read the {what}: {read.error}
        </Notice>
      )}
      {!read.loading && !found && !read.error && (
        <Notice kind="warn">
          {read.offline
            ? `Offline, and this ${what} is not on this device yet. Open it once online.`
            : `There is no ${what} ${name}.`}
        </Notice>
      )}
    </>
  );
}

import { useState } from "preact/hooks";
import { NetworkError } from "../api";
import { unlockAudio } from "../feedback";
import { resumeAfterSignIn } from "../outbox";
import { signIn, user } from "../session";
import { Button, Field, Notice, Page } from "../ui";

export function SignIn() {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const previous = user.value?.username;

  async function submit(event: Event) {
    event.preventDefault();
    unlockAudio();
    const form = event.currentTarget as HTMLFormElement;
    const data = new FormData(form);
    setBusy(true);
    setError(null);
    try {
      const refused = await signIn(String(data.get("username")), String(data.get("password")));
      if (refused) setError(refused);
      else resumeAfterSignIn();
    } catch (e) {
      setError(e instanceof NetworkError ? "No network: signing in needs the server." : String(e));
    } finally {
      setBusy(false);
    }
  }

  return (
    <Page title="Sign in">
      <form onSubmit={submit} class="stack">
        <Field
          label="User name"
          id="username"
          name="username"
          autoComplete="username"
          autoCapitalize="off"
          spellcheck={false}
          required
          value={previous ?? ""}
        />
        <Field
          label="Password"
          id="password"
          name="password"
          type="password"
          autoComplete="current-password"
          required
        />
        {error && <Notice kind="error">{error}</Notice>}
        <button type="submit" class="btn btn-primary" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </Page>
  );
}

export { Button };

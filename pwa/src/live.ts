// Subscriptions over graphql-transport-ws. They are hints to refetch, never the only source:
// a dropped socket loses nothing, the screen reloads its data when the socket is back.
import { createClient, type Client } from "graphql-ws";
import { token } from "./api";

let client: Client | null = null;
const onConnect = new Set<() => void>();

function live(): Client {
  client ??= createClient({
    url: new URL("/graphql", location.href).href.replace(/^http/, "ws"),
    lazy: true,
    keepAlive: 10_000,
    retryAttempts: Infinity,
    shouldRetry: () => true,
    connectionParams: () => ({ authorization: `Bearer ${token.value ?? ""}` }),
    // Each (re)connection: what changed while there was no socket is read again.
    on: { connected: () => onConnect.forEach((f) => f()) },
  });
  return client;
}

/** Runs `onData` for each event, and `onConnected` each time the socket (re)connects, so the
 * screen reads again what it may have missed; returns the unsubscribe function. */
export function subscribe<T>(
  query: string,
  variables: Record<string, unknown>,
  onData: (data: T) => void,
  onConnected?: () => void,
): () => void {
  if (onConnected) onConnect.add(onConnected);
  const stop = live().subscribe<T>(
    { query, variables },
    {
      next: (result) => result.data && onData(result.data as T),
      error: () => undefined,
      complete: () => undefined,
    },
  );
  return () => {
    if (onConnected) onConnect.delete(onConnected);
    stop();
  };
}

/** After signing out: close the socket (it was opened with the old token). */
export function closeLive(): void {
  void client?.dispose();
  client = null;
}

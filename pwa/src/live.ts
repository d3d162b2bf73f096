// Subscriptions over graphql-transport-ws. They are hints to refetch, never the only source:
// a dropped socket loses nothing, the screen reloads its data when the socket is back.
import { createClient, type Client } from "graphql-ws";
import { token } from "./api";

let client: Client | null = null;

function live(): Client {
  client ??= createClient({
    url: new URL("/graphql", location.href).href.replace(/^http/, "ws"),
    lazy: true,
    keepAlive: 10_000,
    retryAttempts: Infinity,
    shouldRetry: () => true,
    connectionParams: () => ({ authorization: `Bearer ${token.value ?? ""}` }),
  });
  return client;
}

/** Runs `onData` for each event; returns the unsubscribe function. */
export function subscribe<T>(
  query: string,
  variables: Record<string, unknown>,
  onData: (data: T) => void,
): () => void {
  return live().subscribe<T>(
    { query, variables },
    {
      next: (result) => result.data && onData(result.data as T),
      error: () => undefined,
      complete: () => undefined,
    },
  );
}

/** After signing out: close the socket (it was opened with the old token). */
export function closeLive(): void {
  void client?.dispose();
  client = null;
}

// Reads for screens: from the network when it answers, stored on the device for offline use,
// from the device (with its age) when it does not.
import { useCallback, useEffect, useState } from "preact/hooks";
import { AuthError, NetworkError, query } from "./api";
import { cacheGet, cachePut } from "./db";

export type Loaded<T> = {
  data: T | null;
  /** When the data shown was read from the server. */
  fetchedAt: string | null;
  /** Shown from the device's cache: the server could not be reached. */
  offline: boolean;
  error: string | null;
  loading: boolean;
  reload: () => void;
};

/** Reads `q` (cached under `key`); returns the server's data, else the device's copy. */
export async function cachedQuery<T>(
  key: string,
  q: string,
  variables: Record<string, unknown> = {},
): Promise<{ data: T | null; fetchedAt: string | null; offline: boolean }> {
  try {
    const data = await query<T>(q, variables);
    await cachePut(key, data);
    return { data, fetchedAt: new Date().toISOString(), offline: false };
  } catch (error) {
    if (!(error instanceof NetworkError)) throw error;
    const cached = await cacheGet<T>(key);
    return { data: cached?.value ?? null, fetchedAt: cached?.fetchedAt ?? null, offline: true };
  }
}

/** The hook over `cachedQuery`; `reload()` reads again (after an action, on a live event). */
export function useQuery<T>(key: string, q: string, variables: Record<string, unknown> = {}): Loaded<T> {
  const [state, setState] = useState<Omit<Loaded<T>, "reload">>({
    data: null,
    fetchedAt: null,
    offline: false,
    error: null,
    loading: true,
  });
  const vars = JSON.stringify(variables);
  const load = useCallback(() => {
    let live = true;
    cachedQuery<T>(key, q, JSON.parse(vars) as Record<string, unknown>)
      .then((r) => live && setState({ ...r, error: null, loading: false }))
      .catch(
        (e: unknown) =>
          live &&
          setState((s) => ({
            ...s,
            loading: false,
            error: e instanceof AuthError ? "Sign in again." : e instanceof Error ? e.message : String(e),
          })),
      );
    return () => {
      live = false;
    };
  }, [key, q, vars]);
  useEffect(load, [load]);
  return { ...state, reload: load };
}

/// <reference lib="webworker" />
// The service worker: the app shell (and the camera decoder) precached, so the app opens
// offline after the first visit. It never touches /graphql: the page's outbox owns writes,
// and reads it caches itself (IndexedDB) with their age.
import { cleanupOutdatedCaches, createHandlerBoundToURL, precacheAndRoute } from "workbox-precaching";
import { NavigationRoute, registerRoute } from "workbox-routing";
import { clientsClaim } from "workbox-core";

declare const self: ServiceWorkerGlobalScope;

// The first install takes the open page at once (so it works offline without a reload);
// later versions wait until the page asks (see the message handler).
clientsClaim();
cleanupOutdatedCaches();
precacheAndRoute(self.__WB_MANIFEST);
registerRoute(
  new NavigationRoute(createHandlerBoundToURL("index.html"), {
    denylist: [/^\/graphql/, /^\/orders\//, /^\/healthz/, /^\/readyz/],
  }),
);

// The page asks for the new version when nothing is waiting in the outbox.
self.addEventListener("message", (event) => {
  if (event.data?.type === "SKIP_WAITING") void self.skipWaiting();
});

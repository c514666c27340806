/* Visit counter snippet: no dependencies, no build step.
 *
 *   <span data-visit-counter data-endpoint="https://FUNCTION_URL/">–</span>
 *   <script src="counter.js" defer></script>
 *
 * data-endpoint is the URL deploy.sh prints, without a query string. data-page names the page
 * (default: location.pathname). data-mode="read" shows the count without counting a visit.
 *
 * Elements with the same endpoint and page share one request, so a page load is one visit
 * however many times it shows the count. If any of them counts, that request is a POST and all
 * of them show the new count (a read-only element agrees with its counting neighbour instead of
 * racing it); if all are read-only, it is a GET. On any failure the elements keep their fallback
 * text, one console.warn is logged per request, and nothing is thrown into the host page.
 * Each element gets data-visit-counter-state: "loading", then "ok" or "error", for CSS or tests.
 *
 * The site's owner can stop counting their own visits: open any page of the site once with
 * ?visit-counter=ignore and this browser only reads from then on; ?visit-counter=count undoes
 * it. The flag lives in this browser's localStorage for the site's origin, nowhere else.
 */
(() => {
  "use strict";
  const TIMEOUT_MS = 5000; // a hung function must not leave a request pending forever
  const OWNER_FLAG = "visit-counter:ignore";

  function ownerIgnored() {
    try {
      const wish = new URLSearchParams(location.search).get("visit-counter");
      if (wish === "ignore") localStorage.setItem(OWNER_FLAG, "1");
      if (wish === "count") localStorage.removeItem(OWNER_FLAG);
      return localStorage.getItem(OWNER_FLAG) === "1";
    } catch {
      return false; // storage blocked (a privacy setting): count as for anyone else
    }
  }

  // async: anything thrown in here, even synchronously, becomes a rejection handled below.
  async function fetchCount(endpoint, page, method) {
    if (!endpoint) throw new Error("no data-endpoint");
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    try {
      // No body and no custom headers: a CORS "simple request", so no preflight round trip.
      const response = await fetch(`${endpoint}?page=${encodeURIComponent(page)}`, {
        method, mode: "cors", credentials: "omit", cache: "no-store", signal: controller.signal,
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const count = (await response.json())?.count;
      if (!Number.isSafeInteger(count) || count < 0) throw new Error("no count in the answer");
      return count;
    } finally {
      clearTimeout(timer); // the body is read by now, so the timeout covers it too
    }
  }

  function start() {
    const ignored = ownerIgnored();
    const groups = new Map(); // endpoint and page -> the elements showing that count
    // Elements already started (the script included twice) are skipped: no second visit.
    for (const element of document.querySelectorAll(
      "[data-visit-counter]:not([data-visit-counter-state])",
    )) {
      element.dataset.visitCounterState = "loading";
      const endpoint = element.dataset.endpoint || "";
      const page = element.dataset.page || location.pathname;
      const key = JSON.stringify([endpoint, page]);
      if (!groups.has(key)) groups.set(key, { endpoint, page, elements: [] });
      groups.get(key).elements.push(element);
    }
    for (const { endpoint, page, elements } of groups.values()) {
      const counts = !ignored && elements.some((element) => element.dataset.mode !== "read");
      fetchCount(endpoint, page, counts ? "POST" : "GET")
        .then((count) => {
          const text = Number(count).toLocaleString();
          for (const element of elements) {
            element.textContent = text;
            element.dataset.visitCounterState = "ok";
          }
        })
        .catch((error) => {
          console.warn(`visit counter: no count for ${page} from ${endpoint}: ${error.message}`);
          for (const element of elements) element.dataset.visitCounterState = "error";
        });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

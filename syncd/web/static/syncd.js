// syncd's dashboard: times in the reader's zone, and the page kept up to date without a reload.
// Everything works without this script: times show in UTC, and the page is refreshed by hand.
"use strict";

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when)) {
      el.textContent = when.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit", second: "2-digit",
      });
    }
  }
}

// Every second: has the journal moved? Then fetch this page again and put its <main> in place
// of ours (focus and the scroll position stay; a form being typed in is left alone).
async function follow() {
  const main = document.getElementById("main");
  const status = document.getElementById("live");
  if (!main || !main.dataset.live) return;
  let seq = main.dataset.seq;
  for (;;) {
    await new Promise((done) => setTimeout(done, 1000));
    try {
      const answer = await fetch(main.dataset.live, { cache: "no-store" });
      if (!answer.ok) throw new Error(String(answer.status));
      const now = (await answer.text()).trim();
      const active = document.activeElement;
      const typing = main.contains(active) && ["INPUT", "SELECT", "TEXTAREA"].includes(active.tagName);
      if (now !== seq && !typing) {
        const page = await fetch(location.href, { cache: "no-store" });
        if (!page.ok) throw new Error(String(page.status));
        const html = await page.text();
        const doc = new DOMParser().parseFromString(html, "text/html");
        const fresh = doc.getElementById("main");
        if (fresh) {
          main.replaceChildren(...fresh.childNodes);
          main.dataset.seq = fresh.dataset.seq;
          localTimes(main);
        }
        seq = now;
      }
      status.textContent = "read-only · live";
    } catch (err) {
      status.textContent = "read-only · not live (" + err.message + "); refresh by hand";
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  follow();
});

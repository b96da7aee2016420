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

// Whether the reader is working in the page: focus inside <main> (a link, a field, the diff), or
// a filter changed and not yet sent. The page is not swapped under them then.
function busy(main) {
  const active = document.activeElement;
  if (active && active !== document.body && main.contains(active)) return true;
  for (const field of main.querySelectorAll("input, textarea")) {
    if (field.value !== field.defaultValue) return true;
  }
  for (const select of main.querySelectorAll("select")) {
    const initial = Array.from(select.options).findIndex((o) => o.defaultSelected);
    if (select.selectedIndex !== Math.max(initial, 0)) return true;
  }
  return false;
}

// Every second: has the journal moved? Then fetch this page again and put its <main> in place
// of ours, unless the reader is working in the page (then it waits, and says so).
async function follow() {
  const main = document.getElementById("main");
  const status = document.getElementById("live");
  if (!main || !main.dataset.live) return;
  for (;;) {
    await new Promise((done) => setTimeout(done, 1000));
    try {
      const answer = await fetch(main.dataset.live, { cache: "no-store" });
      if (!answer.ok) throw new Error(String(answer.status));
      const now = (await answer.text()).trim();
      if (now !== main.dataset.seq && busy(main)) {
        status.textContent = "read-only · live, paused while you are in the page";
        continue;
      }
      if (now !== main.dataset.seq) {
        const page = await fetch(location.href, { cache: "no-store" });
        if (!page.ok) throw new Error(String(page.status));
        const html = await page.text();
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        if (fresh && !busy(main)) {
          main.replaceChildren(...fresh.childNodes);
          main.dataset.seq = fresh.dataset.seq;
          localTimes(main);
        }
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

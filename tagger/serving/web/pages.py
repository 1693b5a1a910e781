"""HTML for the web app: plain server-rendered pages, every value escaped here and nowhere else.

Pages work without JavaScript (links, forms, the native audio element); ``static/app.js`` adds the
previews' play buttons, the taggram drawing, the correction form's request and the status page's refresh.
No inline script or style: the Content-Security-Policy allows only the tool's own files.
"""
from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from tagger import fields as field_registry
from tagger.serving.web.catalogue import PAGE_SIZES, Query, Result, facet_names


def facet_title(name: str) -> str:
    f = field_registry.all_fields()
    return next((x.heading for x in f if x.name == name), name.capitalize())


FACET_SHOWN = 40
# Drawn, not a font glyph: the padlock emoji is a blank box where no emoji font is installed.
LOCK_ICON = ('<svg class=lock-icon viewBox="0 0 16 16" width=14 height=14 role=img aria-label="locked: your value">'
             '<title>locked: your value, never changed by a scan</title><rect x=3 y=7 width=10 height=8 rx=1.5 '
             'fill=currentColor /><path d="M5 7V5a3 3 0 0 1 6 0v2" fill=none stroke=currentColor stroke-width=1.8 />'
             '</svg>')


def ownership(values: Sequence[str], written: Sequence[str], locked: bool, policy: str) -> str:
    """Whose the field's values are, in the user's words (TAGGER_WRITTEN lists what the tool added)."""
    ours = {w.casefold() for w in written}
    if locked:
        return f"{LOCK_ICON} yours, locked: no scan changes it"
    if not values:
        return "empty: tagger fills it when the models agree"
    if all(v.casefold() in ours for v in values):
        return "written by tagger (undo removes it)"
    return {"fill": "yours: tagger leaves it as it is", "merge": "yours: tagger may add a value beside it",
            "replace": "yours: the configuration lets tagger replace it"}.get(policy, "yours")


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def duration(seconds: Any) -> str:
    try:
        s = int(round(float(seconds)))
    except (TypeError, ValueError):
        return ""
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def track_name(t: Mapping[str, Any]) -> str:
    return str(t.get("title") or os.path.basename(str(t["path"])))


def layout(title: str, body: str, *, csrf: str, active: str) -> str:
    nav = "".join(f'<a href="{href}"{" class=on" if key == active else ""}>{label}</a>'
                  for key, href, label in (("library", "/", "Library"), ("playlist", "/playlist", "Playlists"),
                                           ("status", "/status", "Status")))
    return ("<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f'<meta name=csrf-token content="{e(csrf)}"><title>{e(title)} · tagger</title>'
            '<link rel=icon href="/static/icon.svg" type="image/svg+xml"><link rel=stylesheet href="/static/style.css">'
            '<script defer src="/static/app.js"></script></head>'
            f'<body><header><span class=brand>tagger</span><nav>{nav}</nav></header><main>{body}</main>'
            '<audio id=player preload=none></audio></body></html>')


def _play(track_id: int, name: str) -> str:
    return (f'<button type=button class=play data-src="/audio/{track_id}" title="Play a preview of {e(name)}" '
            f'aria-label="Play {e(name)}">▶</button>')


def _link(params: Mapping[str, Any]) -> str:
    pairs = [(k, x) for k, v in params.items() for x in (v if isinstance(v, (list, tuple)) else [v])
             if x not in (None, "")]
    return "/?" + urlencode(pairs) if pairs else "/"


def _params(q: Query, **change: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"q": q.text, "sort": q.sort, "order": "desc" if q.descending else "asc",
                         "per_page": q.per_page if q.per_page != 50 else None}
    p.update({f: list(v) for f, v in q.chosen.items()})
    p.update(change)
    if p.get("sort") == "artist":
        p["sort"] = None
    if p.get("order") == "asc":
        p["order"] = None
    return p


def library_page(result: Result, q: Query, *, csrf: str, library_size: int) -> str:
    facets = []
    for name in facet_names():
        values = result.facets.get(name, [])
        if not values:
            continue
        items = []
        shown = [vc for i, vc in enumerate(values) if i < FACET_SHOWN or vc[0] in q.chosen.get(name, ())]
        for value, count in shown:
            chosen = value in q.chosen.get(name, ())
            now = [v for v in q.chosen.get(name, ()) if v != value] if chosen else [*q.chosen.get(name, ()), value]
            href = _link(_params(q, **{name: now, "page": None}))
            cls = ' class="chosen"' if chosen else ""
            items.append(f'<li{cls}><a href="{e(href)}" data-facet="{e(name)}" data-value="{e(value)}">'
                         f'{e(value)}</a> <span class=count>{count}</span></li>')
        more = (f'<li class=more>{len(values) - len(shown)} more</li>' if len(values) > len(shown) else "")
        facets.append(f'<section class=facet data-name="{e(name)}"><h3>{facet_title(name)}</h3>'
                      f'<ul>{"".join(items)}{more}</ul></section>')
    heads = []
    for key, label in (("title", "Title"), ("artist", "Artist"), ("album", "Album"), ("genre", "Genre"),
                       ("duration", "Length")):
        desc = q.sort == key and not q.descending
        arrow = (" ▲" if not q.descending else " ▼") if q.sort == key else ""
        href = _link(_params(q, sort=key, order="desc" if desc else "asc", page=None))
        heads.append(f'<th><a href="{e(href)}" data-sort="{key}">{label}{arrow}</a></th>')
    rows = []
    for t in result.rows:
        rows.append(
            f'<tr data-id="{t["id"]}"><td>{_play(t["id"], track_name(t))}</td>'
            f'<td><a href="/track/{t["id"]}">{e(track_name(t))}</a></td><td>{e(t.get("artist") or "")}</td>'
            f'<td>{e(t.get("album") or "")}</td><td>{e(", ".join(t.get("_genre") or []))}'
            f'{LOCK_ICON if "GENRE" in (t.get("locked") or []) else ""}</td>'
            f'<td class=num>{duration(t.get("duration"))}</td></tr>')
    page = min(q.page, result.pages)
    nav = []
    if page > 1:
        nav.append(f'<a rel=prev href="{e(_link(_params(q, page=page - 1)))}">← previous</a>')
    nav.append(f"<span>page {page} of {result.pages}</span>")
    if page < result.pages:
        nav.append(f'<a rel=next href="{e(_link(_params(q, page=page + 1)))}">next →</a>')
    sizes = "".join(f'<option value={n}{" selected" if n == q.per_page else ""}>{n}</option>' for n in PAGE_SIZES)
    hidden = "".join(f'<input type=hidden name="{e(f)}" value="{e(v)}">' for f, vs in q.chosen.items() for v in vs)
    hidden += "".join(f'<input type=hidden name="{k}" value="{e(v)}">' for k, v in
                      (("sort", q.sort), ("order", "desc" if q.descending else "asc")))
    clear = ' <a href="/" class=clear>clear all</a>' if q.chosen or q.text else ""
    body = (f'<form class=search method=get action="/"><input type=search name=q value="{e(q.text)}" '
            f'placeholder="Search title, artist, album, path" aria-label=Search>{hidden}'
            f'<select name=per_page aria-label="Tracks per page">{sizes}</select><button>Search</button>{clear}</form>'
            f'<div class=library><aside>{"".join(facets)}</aside><section>'
            f'<p class=summary><strong id=total>{result.total}</strong> of {library_size} tracks</p>'
            f'<table class=tracks><thead><tr><th></th>{"".join(heads)}</tr></thead><tbody>{"".join(rows)}</tbody>'
            f'</table><nav class=pages>{" ".join(nav)}</nav></section></div>')
    return layout("Library", body, csrf=csrf, active="library")


def _bars(pairs: Sequence[tuple[str, float]], cls: str = "") -> str:
    return "".join(f'<div class="bar {cls}"><span class=label>{e(label)}</span><span class=track>'
                   f'<span class=fill data-p="{p:.4f}"></span></span><span class=num>{p:.2f}</span></div>'
                   for label, p in pairs)


def track_page(t: Mapping[str, Any], *, csrf: str, models: Sequence[Mapping[str, Any]],
               decision: Mapping[str, Mapping[str, Any]], file_tags: Mapping[str, list[str]] | None,
               file_error: str, similar: Sequence[Mapping[str, Any]], known: Mapping[str, Sequence[str]],
               policies: Mapping[str, str] | None = None, has_cover: bool = False) -> str:
    tid = t["id"]
    meta = " · ".join(e(x) for x in (t.get("artist"), t.get("album"), duration(t.get("duration"))) if x)
    cover = f'<img class=cover src="/cover/{tid}" alt="Cover art" width=160 height=160>' if has_cover else ""
    parts = [f'<div class=head>{cover}<div><h1>{e(track_name(t))}</h1><p class=meta>{meta}</p>'
             f'<p class=path>{e(t["path"])}</p>'
             f'<audio controls preload=none src="/audio/{tid}" id=track-audio></audio></div></div>']
    # What the file says, what the tool decided, and the user's corrections.
    locked = {x.upper() for x in (file_tags or {}).get("TAGGER_LOCKED", [])}
    rows = []
    for fld in field_registry.correctable():
        name = field_registry.field(fld).tag
        now = (file_tags or {}).get(name, [])
        d = decision.get(fld, {})
        written = [w.partition("=")[2] for w in (file_tags or {}).get("TAGGER_WRITTEN", [])
                   if w.partition("=")[0] == name]
        lock = ownership(now, written, name in locked, (policies or {}).get(fld, "fill"))
        options = "".join(f"<option value=\"{e(v)}\">" for v in known.get(fld, ()))
        rows.append(
            f'<tr data-field="{fld}"><th>{field_registry.field(fld).heading}</th><td class=in-file>{e(", ".join(now)) or "<em>none</em>"}'
            f'<div class=lock>{lock}</div></td>'
            f'<td class=decided>{e(", ".join(d.get("values", []))) or "<em>none</em>"}'
            f'<div class=reason>{e(d.get("reason", ""))}</div></td>'
            f'<td><form class=correct data-track="{tid}" data-field="{fld}">'
            f'<input name=values list="known-{fld}" value="{e(", ".join(now))}" aria-label="{fld} values" '
            f'placeholder="comma-separated"><datalist id="known-{fld}">{options}</datalist>'
            f'<button name=action value=set>Save</button> <button name=action value=clear>Remove</button> '
            f'<button name=action value=unlock{" disabled" if name not in locked else ""}>Let tagger decide</button>'
            f'<output class=result></output></form></td></tr>')
    parts.append('<section><h2>Tags</h2><table class=fields><thead><tr><th></th><th>In the file</th>'
                 f'<th>Decided by the models</th><th>Correct it</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    if file_error:
        parts.append(f'<p class=error>The file\'s tags cannot be read: {e(file_error)}</p>')
    elif file_tags:
        other = "".join(f"<tr><th>{e(k)}</th><td>{e('; '.join(v))}</td></tr>" for k, v in file_tags.items()
                        if v and k not in {field_registry.field(f).tag for f in field_registry.correctable()})
        if other:
            parts.append(f'<details><summary>Other fields the tool reads</summary><table class=raw>{other}</table>'
                         '</details>')
    extra = [(k, v) for k, v in decision.items() if k not in field_registry.correctable() and v.get("values")]
    if extra:
        parts.append("<p>" + "; ".join(f"{e(k)}: {e(', '.join(v['values']))}" for k, v in extra) + "</p>")
    parts.append("</section>")
    # Every model's view.
    blocks = []
    for m in models:
        pairs = m["labels"]
        blocks.append(f'<div class=model><h3 title="{e(m["analyser"])}">{e(m["model"])}</h3>{_bars(pairs[:10])}'
                      f'<details><summary>all {len(pairs)} labels</summary>{_bars(pairs[10:], "small")}</details></div>')
    parts.append(f'<section><h2>What each model hears</h2><div class=models>{"".join(blocks)}</div></section>')
    parts.append(f'<section><h2>Taggram</h2><p class=hint>Labels over time, computed from every window of the file '
                 f'when you open it.</p><div class=taggram data-track="{tid}"><canvas width=900 height=260></canvas>'
                 '<p class=state>computing…</p></div></section>')
    sim = "".join(f'<li>{_play(s["id"], track_name(s))} <a href="/track/{s["id"]}">{e(track_name(s))}</a>'
                  f' <span class=meta>{e(s.get("artist") or "")}</span> <span class=num>{s["score"]:.3f}</span></li>'
                  for s in similar)
    parts.append(f'<section><h2>Sounds like this</h2><ol class=similar>{sim or "<li>nothing yet</li>"}</ol>'
                 f'<p><a href="/playlist?seed={tid}">A playlist from this track</a></p></section>')
    return layout(track_name(t), "".join(parts), csrf=csrf, active="library")


def playlist_page(rows: Sequence[Mapping[str, Any]], *, csrf: str, seed: Mapping[str, Any] | None,
                  tags: Sequence[str], n: int, labels: Sequence[str], error: str = "") -> str:
    opts = "".join(f'<option value="{e(label)}">' for label in labels)
    form = ('<form class=playlist method=get action="/playlist">'
            + (f'<input type=hidden name=seed value="{seed["id"]}">' if seed else "")
            + f'<label>Tags <input name=tags list=labels value="{e(", ".join(tags))}" placeholder="e.g. jazz, Mellow">'
            f'</label><datalist id=labels>{opts}</datalist> <label>Tracks <input name=n type=number min=1 max=200 '
            f'value={n}></label> <button>Make playlist</button></form>')
    head = '<h1>Playlist</h1>' + (f'<p>Starting from <a href="/track/{seed["id"]}">{e(track_name(seed))}</a>'
                                    f' <a href="/playlist">(no seed)</a></p>' if seed else "")
    if error:
        return layout("Playlist", head + form + f'<p class=error>{e(error)}</p>', csrf=csrf, active="playlist")
    if not rows:
        return layout("Playlist", head + form + "<p>Choose tags, or open a track and make a playlist from it.</p>",
                      csrf=csrf, active="playlist")
    query = urlencode([(k, v) for k, v in (("seed", seed["id"] if seed else ""), ("tags", ",".join(tags)),
                                           ("n", n)) if v != ""])
    items = "".join(f'<li>{_play(r["id"], track_name(r))} <a href="/track/{r["id"]}">{e(track_name(r))}</a> '
                    f'<span class=meta>{e(r.get("artist") or "")}</span> <span class=num>{duration(r.get("duration"))}'
                    '</span></li>' for r in rows if r.get("id"))
    body = (head + form + f'<ol class=playlist-tracks>{items}</ol>'
            f'<p><a class=button href="/playlist.m3u8?{e(query)}" download>Save as .m3u8</a></p>')
    return layout("Playlist", body, csrf=csrf, active="playlist")


def status_page(status: Mapping[str, Any], *, csrf: str, tracks: int, models: Sequence[tuple[str, str]],
                heads: Sequence[str], problems: Sequence[tuple[str, str, str]] = ()) -> str:
    names = ", ".join(f'<span title="{e(version)}">{e(name)}</span>' for name, version in models) or "none"
    body = ('<h1>Status</h1><div id=status data-refresh="/api/v1/status">' + status_block(status) + "</div>"
            f"<h2>Library</h2><p>{tracks} tracks analysed. Models: {names}. "
            f"Trained heads: {e(', '.join(heads)) or 'none (run tagger train)'}.</p>")
    if problems:
        rows = "".join(f"<tr><td class=path>{e(path)}</td><td>{e(what)}</td><td>{e(reason)}</td></tr>"
                       for path, what, reason in problems)
        body += (f"<h2>Files with problems ({len(problems)})</h2><p>Fix the file (or remove it) and the next scan "
                 "tries again.</p><table class=problems><thead><tr><th>File</th><th>What failed</th><th>Why</th>"
                 f"</tr></thead><tbody>{rows}</tbody></table>")
    else:
        body += "<h2>Files with problems</h2><p>None: every file was analysed, and every tag write succeeded.</p>"
    return layout("Status", body, csrf=csrf, active="status")


def status_block(s: Mapping[str, Any]) -> str:
    if s.get("running"):
        total, done = int(s.get("total") or 0), int(s.get("done") or 0)
        bar = (f'<progress max="{total}" value="{min(done, total)}"></progress> {done} of {total}'
               if total and s.get("state") != "watching" else "")
        return (f'<p class=state>The daemon is <strong>{e(s.get("state", "running"))}</strong> '
                f'(pid {e(s.get("pid"))}).</p>{bar}<ul>'
                f'<li>{e(s.get("analysed", 0))} files analysed, {e(s.get("written", 0))} written, '
                f'{e(s.get("failed", 0))} failed since it started</li>'
                f'<li>{e(s.get("waiting", 0))} files waiting to settle; {e(s.get("inbox", 0))} corrections waiting</li>'
                f'<li>watching {e(", ".join(s.get("roots", [])))}</li></ul>')
    holder = s.get("lock_holder")
    other = (f" Another tagger process (pid {e(holder)}) is writing to the database now." if holder else "")
    return (f'<p class=state>The daemon is <strong>not running</strong>.{other} Corrections are applied by this '
            f'server directly.</p>' + (f'<p class=error>{e(s["error"])}</p>' if s.get("error") else ""))


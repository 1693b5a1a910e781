"""The local web app served by `tagger serve` at ``/``.

Chosen approach: server-rendered HTML pages with one small hand-written script, no framework and no build
step. The pages are mostly lists and forms, which HTML does well on its own (they work, read-only, with
JavaScript off); the server already holds every number the pages show, so rendering there avoids shipping
the database to the browser; and a user installing a tagger on a NAS should not need Node.js, a bundler or
a CDN. ``catalogue`` indexes the library for search, facets and paging; ``site`` gathers each page's data;
``pages`` renders it; ``media`` streams previews; ``taggram`` computes labels over time on demand.
"""

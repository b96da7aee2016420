"""The read-only dashboard on `http.listen`: views.py (what each page shows, pure), dashboard.py
(the routes, access and headers), templates/ (Jinja2) and static/ (its stylesheet and script)."""

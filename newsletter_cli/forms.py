"""Reading HTML forms the way a browser without JavaScript does.

The demo and the end-to-end test sign up and confirm through the real pages: they find a form,
keep its hidden inputs (CSRF token, time trap), fill the visible fields and post it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin


@dataclass
class Form:
    action: str
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    checkboxes: list[tuple[str, str]] = field(default_factory=list)
    input_types: dict[str, str] = field(default_factory=dict)

    def filled(
        self, values: dict[str, str], *, check: dict[str, set[str]] | None = None
    ) -> list[tuple[str, str]]:
        """The pairs to post: defaults, ``values`` overriding, and the ``check``ed boxes only."""
        wanted = check or {}
        pairs = [(name, values.get(name, value)) for name, value in self.fields]
        present = {name for name, _ in self.fields}
        pairs += [(name, value) for name, value in values.items() if name not in present]
        pairs += [(name, value) for name, value in self.checkboxes if value in wanted.get(name, ())]
        return pairs


class _FormParser(HTMLParser):
    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.forms: list[Form] = []
        self._current: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "form":
            action = urljoin(self.base_url, attributes.get("action") or self.base_url)
            self._current = Form(action=action, method=attributes.get("method", "get").lower())
            self.forms.append(self._current)
        elif tag in {"input", "button"} and self._current is not None:
            name = attributes.get("name")
            kind = attributes.get("type", "text" if tag == "input" else "submit").lower()
            if not name:
                return
            self._current.input_types.setdefault(name, kind)
            value = attributes.get("value", "")
            if kind in {"checkbox", "radio"}:
                if "checked" in attributes:
                    self._current.fields.append((name, value or "on"))
                else:
                    self._current.checkboxes.append((name, value or "on"))
            elif kind not in {"submit", "button", "image", "reset"}:
                self._current.fields.append((name, value))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def find_forms(html: str, *, base_url: str) -> list[Form]:
    parser = _FormParser(base_url)
    parser.feed(html)
    return parser.forms


def post_forms(html: str, *, base_url: str) -> list[Form]:
    return [form for form in find_forms(html, base_url=base_url) if form.method == "post"]

"""Markdown that would reach readers broken is refused with its file, line and column."""

from __future__ import annotations

import pytest

from services.renderer.errors import IssueFormatError
from services.renderer.issue import parse_edition

HEADER = """---
issue: 51
language: ru
dates: 2021-12-20 .. 2021-12-26
subject: Тема
preheader: Прехедер
---

# Экономика

## Транзит калия {#potash-transit}

Лид статьи.

"""
FIRST_BODY_LINE = HEADER.count("\n") + 1  # 15


def problems(body: str) -> list[str]:
    return [str(p) for p in parse_edition(HEADER + body, file="ru.md").problems]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "Сообщило [Министерство транспорта](https://www.mintrans.gov.by/ в пятницу.\n",
            "ru.md:15:10: unclosed link: no ')' after 'https://www.mintrans.gov.by/'; readers "
            "would see raw text (close it with ')' right after the address)",
        ),
        (
            "Карта ![Граница](https://example.org/map.png\n",
            "ru.md:15:7: unclosed image: no ')' after 'https://example.org/map.png'; readers "
            "would see raw text (close it with ')' right after the address)",
        ),
        (
            "См. [отчёт](https://example.org/report 2021.pdf) здесь.\n",
            "ru.md:15:5: the link's URL 'https://example.org/report 2021.pdf' contains a space: "
            "readers would see raw text (remove the space or write it as %20)",
        ),
        (
            "Ссылка [](https://example.org/a) без текста.\n",
            "ru.md:15:8: the link to https://example.org/a has no text: there is nothing to click "
            "(write [what the reader clicks](https://example.org/a))",
        ),
        (
            "Подробнее на www.mintrans.gov.by/news.\n",
            "ru.md:15:14: www.mintrans.gov.by/news is not a link: a bare address stays plain text "
            "in the HTML (write [text](https://www.mintrans.gov.by/news))",
        ),
        (
            "![](https://example.org/map.png)\n",
            "ru.md:15:5: image https://example.org/map.png has no alt text (describe it for "
            "readers who do not see images: ![a map of …](…))",
        ),
        (
            "Текст <b>жирный</b> здесь.\n",
            "ru.md:15:7: raw HTML '<b>' is not rendered: readers would see it as text (use "
            "Markdown instead, e.g. **bold** or [text](https://…), or remove it)",
        ),
        (
            '<div align="center">Центр</div>\n',
            "ru.md:15:1: raw HTML '<div align=\"center\">Центр</div>' is not rendered: readers "
            "would see it as text (use Markdown instead, e.g. **bold** or [text](https://…), or "
            "remove it)",
        ),
        (
            "См. [отчёт] (https://example.org/report) здесь.\n",
            "ru.md:15:5: link syntax with a space between ']' and '(': it shows as plain text "
            "(write [text](https://…) with nothing between ']' and '(')",
        ),
        (
            "См. [отчёт](/reports/51) здесь.\n",
            "ru.md:15:13: link '/reports/51' is not absolute (write the full https:// address)",
        ),
        (
            "См. [отчёт][report-51] здесь.\n",
            "ru.md:15:5: the link reference [report-51] is not defined: readers would see raw "
            "text (add a line '[report-51]: https://…' or write [text](https://…))",
        ),
        (
            "Текст <!-- заметка редактора --> здесь.\n",
            "ru.md:15:7: raw HTML '<!-- заметка редактора -->' is not rendered: readers would "
            "see it as text (use Markdown instead, e.g. **bold** or [text](https://…), or "
            "remove it)",
        ),
    ],
    ids=[
        "unclosed-link",
        "unclosed-image",
        "space-in-url",
        "empty-link-text",
        "bare-www",
        "image-without-alt",
        "raw-inline-html",
        "raw-html-block",
        "space-before-url",
        "relative-link",
        "undefined-reference",
        "html-comment",
    ],
)
def test_each_broken_markdown_case_is_an_error_with_file_line_and_column(
    body: str, expected: str
) -> None:
    found = problems(body)
    assert found == [expected]


def test_the_line_counts_soft_breaks_lists_and_quotes() -> None:
    body = (
        "Первая строка абзаца\nвторая [ссылка](https://example.org/a b)\n\n"
        "- пункт\n- > цитата [x](https://example.org\n"
    )
    found = problems(body)
    assert [p.split(": ")[0] for p in found] == ["ru.md:16:8", "ru.md:19:12"], found


def test_a_link_split_over_two_lines_is_located_where_it_breaks() -> None:
    body = "Сообщило [Министерство\nтранспорта](https://www.mintrans.gov.by/ в пятницу.\n"
    (found,) = problems(body)
    assert found.startswith("ru.md:16:11: unclosed link"), found


def test_well_formed_markdown_has_no_problem() -> None:
    body = (
        "Сообщило [Министерство транспорта](https://www.mintrans.gov.by/), "
        "см. <https://example.org/auto> и [почта](mailto:editor@example.org).\n\n"
        "![Карта границы](https://example.org/map.png)\n\n"
        "Код `[a](b` и экранирование \\[x\\](y) остаются текстом; 3 < 4 и a > b.\n\n"
        "```\n<div>[x](y</div>\n```\n\n"
        "Сайт [www.mintrans.gov.by](https://www.mintrans.gov.by/), [отчёт][r], 3 < 4, "
        "a<b and c > d, [sic], [1].\n\n"
        "[r]: https://example.org/report\n"
    )
    assert problems(body) == []


def test_several_problems_come_sorted_by_position() -> None:
    body = "Ссылка [](https://example.org/a) и www.example.org.\n\n![](https://e.org/i.png)\n"
    found = problems(body)
    assert [p.split(": ")[0] for p in found] == ["ru.md:15:8", "ru.md:15:36", "ru.md:17:5"]


def test_a_duplicate_article_key_is_a_format_error_at_the_second_key() -> None:
    body = "Текст.\n\n## Снова {#potash-transit}\n\nЛид.\n"
    with pytest.raises(IssueFormatError) as caught:
        parse_edition(HEADER + body, file="ru.md")
    assert [str(p) for p in caught.value.problems] == [
        "ru.md:17:10: article key 'potash-transit' is used twice (first on line 11) "
        "(give each article its own key)"
    ]


def test_markdown_problems_count_against_their_article_in_the_matrix() -> None:
    edition = parse_edition(HEADER + "Сломано [x](https://e.org\n", file="ru.md")
    (problem,) = edition.problems
    assert edition.article_at(problem.line) is edition.articles[0]
    assert problem.check == "links"
    assert problem.is_error

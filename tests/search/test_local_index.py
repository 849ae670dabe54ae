"""search.local_index: the SQLite FTS5 index (documents in, ranked results out)."""

from __future__ import annotations

from pathlib import Path

from dashserve.search.local_index import LocalIndex, match_expression


def make_index(tmp_path: Path) -> LocalIndex:
    index = LocalIndex(tmp_path / "index.sqlite3")
    index.add("Hangzhou weather", "https://weather.example/hz",
              "Tomorrow Hangzhou will be sunny, 25 degrees. 杭州明天天气晴朗。",
              site_name="Weather Example")
    index.add("Python language", "https://python.example/",
              "Python is a programming language that lets you work quickly.")
    index.add("Weather in Beijing", "https://weather.example/bj",
              "Beijing weather: cloudy with light wind.")
    return index


def test_ranked_results_from_the_index(tmp_path: Path) -> None:
    index = make_index(tmp_path)
    results = index.search_sync("What is the weather in Hangzhou tomorrow?", 5)
    assert [r.url for r in results][0] == "https://weather.example/hz"
    assert {r.url for r in results} == {"https://weather.example/hz",
                                        "https://weather.example/bj"}
    top = results[0]
    assert top.title == "Hangzhou weather" and top.site == "Weather Example"
    assert "sunny" in top.snippet
    assert results[1].site == "weather.example"  # no site name: the URL's host
    assert index.search_sync("杭州明天天气是什么?", 5)[0].url == "https://weather.example/hz"
    assert len(index.search_sync("weather", 1)) == 1


def test_queries_without_usable_words_find_nothing(tmp_path: Path) -> None:
    index = make_index(tmp_path)
    assert index.search_sync("", 5) == [] and index.search_sync("a b ?", 5) == []
    assert match_expression('say "hi" AND OR NOT weather') == \
        '"say" OR "and" OR "not" OR "weather"'
    assert index.search_sync('") OR * NEAR(', 5) == []  # query syntax is quoted, not run


def test_documents_are_listed_replaced_and_deleted(tmp_path: Path) -> None:
    index = make_index(tmp_path)
    docs, total = index.list()
    assert total == 3 and [d.title for d in docs][0] == "Hangzhou weather"
    doc = index.add("Python 3", "https://python.example/3", "Python three", doc_id=docs[1].id)
    assert index.get(doc.id) == doc and index.list()[1] == 3
    assert index.search_sync("programming", 5) == []  # the old text left the index
    assert index.delete(doc.id) and not index.delete(doc.id)
    assert index.search_sync("python", 5) == [] and index.list()[1] == 2
    index.close()
    reopened = LocalIndex(tmp_path / "index.sqlite3")  # persisted in the file
    assert reopened.list()[1] == 2


def test_a_directory_is_indexed_once_per_file(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "guide.md").write_text("# Install guide\n\nRun the installer with --quiet.\n")
    (docs / "sub" / "page.html").write_text("<html><h1>Release notes</h1><p>Version 2 "
                                            "adds quiet mode</p></html>")
    (docs / "image.png").write_bytes(b"\x89PNG")
    index = LocalIndex(tmp_path / "index.sqlite3")
    assert index.load_directory(docs) == 2
    assert index.load_directory(docs) == 2  # again: same ids, no duplicates
    assert index.list()[1] == 2
    results = index.search_sync("quiet installer", 5)
    assert results[0].title == "Install guide"
    assert results[0].url == (docs / "guide.md").resolve().as_uri()
    html = index.search_sync("release notes", 5)[0]
    assert "<p>" not in html.snippet and "Version 2" in html.snippet

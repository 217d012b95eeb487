"""``tidings demo [APP]``: finding an app's demo entry point and the options it gets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import shop.demo
from tidings.cli.demo import demo_options, load_demo


def test_the_reference_shop_is_the_default_demo() -> None:
    assert load_demo() is shop.demo.main
    assert load_demo("shop.demo") is shop.demo.main
    assert load_demo("shop.demo:main") is shop.demo.main


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        ("no_such_app.demo", LookupError, "no module 'no_such_app' (is the app installed?)"),
        ("shop.demo:nope", LookupError, "shop.demo has no attribute 'nope'"),
        ("shop.demo:SERVICES", TypeError, "shop.demo:SERVICES is a tuple, not a function"),
    ],
)
def test_a_wrong_entry_point_says_why(target: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        load_demo(target)


def test_options_get_a_fresh_directory_and_sqlite_urls_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    options = demo_options("", "", orders=7)
    assert options.workdir.is_dir() and options.workdir.parent == Path(".tidings")
    assert options.broker == f"sqlite:///{options.workdir}/log.db"
    assert options.store == f"sqlite:///{options.workdir}/{{service}}.db"
    assert options.orders == 7
    given = demo_options("kafka://127.0.0.1:9092", "postgresql:///tidings")
    assert (given.broker, given.store) == ("kafka://127.0.0.1:9092", "postgresql:///tidings")

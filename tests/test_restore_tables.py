"""Pure tests of ``restore --into --table``'s selection from an archive's table of contents,
``--into``'s name checks and mark, and ``--list-tables``'s rendering (no database)."""

from __future__ import annotations

import pytest

from velocity_pg.errors import OperationFailed
from velocity_pg.restore import into, tables
from velocity_pg.store import manifest

#: ``pg_restore --list --verbose`` of a real archive (PostgreSQL 15): public.customers
#: (bigserial, an index, an enum column), shop.orders (identity, CHECK, a trigger, a
#: comment, a foreign key to customers), shop.lines (serial, a foreign key to orders),
#: a view over shop.orders, and a public.orders beside shop.orders.
LISTING = """\
;
; Archive created at 2026-12-07 02:49:28 UTC
;     dbname: s
;
; Selected TOC Entries:
;
3385; 0 0 ENCODING - ENCODING
3386; 0 0 STDSTRINGS - STDSTRINGS
3387; 0 0 SEARCHPATH - SEARCHPATH
3388; 1262 16384 DATABASE - s postgres
6; 2615 16385 SCHEMA - shop postgres
846; 1247 16387 TYPE shop mood postgres
;\tdepends on: 6
223; 1255 16427 FUNCTION shop trg() postgres
;\tdepends on: 6
216; 1259 16392 TABLE public customers postgres
;\tdepends on: 846
215; 1259 16391 SEQUENCE public customers_id_seq postgres
;\tdepends on: 216
3389; 0 0 SEQUENCE OWNED BY public customers_id_seq postgres
;\tdepends on: 215
222; 1259 16433 TABLE public orders postgres
220; 1259 16416 TABLE shop lines postgres
;\tdepends on: 6
219; 1259 16415 SEQUENCE shop lines_id_seq postgres
;\tdepends on: 220 6
3390; 0 0 SEQUENCE OWNED BY shop lines_id_seq postgres
;\tdepends on: 219
218; 1259 16402 TABLE shop orders postgres
;\tdepends on: 6
3391; 0 0 COMMENT shop TABLE orders postgres
;\tdepends on: 218
217; 1259 16401 SEQUENCE shop orders_id_seq postgres
;\tdepends on: 6 218
221; 1259 16429 VIEW shop v postgres
;\tdepends on: 218 218 218 6
3220; 2604 16395 DEFAULT public customers id postgres
;\tdepends on: 215 216 216
3221; 2604 16419 DEFAULT shop lines id postgres
;\tdepends on: 220 219 220
3377; 0 16392 TABLE DATA public customers postgres
;\tdepends on: 216
3382; 0 16433 TABLE DATA public orders postgres
;\tdepends on: 222
3381; 0 16416 TABLE DATA shop lines postgres
;\tdepends on: 220
3379; 0 16402 TABLE DATA shop orders postgres
;\tdepends on: 218
3392; 0 0 SEQUENCE SET public customers_id_seq postgres
;\tdepends on: 215
3393; 0 0 SEQUENCE SET shop lines_id_seq postgres
;\tdepends on: 219
3394; 0 0 SEQUENCE SET shop orders_id_seq postgres
;\tdepends on: 217
3225; 2606 16399 CONSTRAINT public customers customers_pkey postgres
;\tdepends on: 216
3229; 2606 16421 CONSTRAINT shop lines lines_pkey postgres
;\tdepends on: 220
3227; 2606 16409 CONSTRAINT shop orders orders_pkey postgres
;\tdepends on: 218
3223; 1259 16400 INDEX public customers_name_idx postgres
;\tdepends on: 216
3232; 2620 16428 TRIGGER shop orders t1 postgres
;\tdepends on: 218 223
3231; 2606 16422 FK CONSTRAINT shop lines lines_order_id_fkey postgres
;\tdepends on: 218 220 3227
3230; 2606 16410 FK CONSTRAINT shop orders orders_customer_id_fkey postgres
;\tdepends on: 3225 216 218
"""

ITEMS = tables.parse_items(LISTING)
NAMES = [name for name, _ in tables.archive_tables(ITEMS)]
SETTINGS = {3385, 3386, 3387}


def ids(selection: tables.Selection) -> set[int]:
    return {e.dump_id for e in selection.entries}


def test_dependencies_are_read_with_their_entries() -> None:
    by_id = {i.entry.dump_id: i for i in ITEMS}
    assert by_id[3230].deps == (3225, 216, 218)
    assert by_id[6].deps == ()
    assert len(ITEMS) == 34
    assert [t.shown for t in NAMES] == [
        "public.customers", "public.orders", "shop.lines", "shop.orders"
    ]  # fmt: skip


def test_one_table_brings_its_own_and_what_it_needs() -> None:
    chosen = tables.resolve(["public.customers"], NAMES)
    selection = tables.select(ITEMS, chosen)
    # table, its type and schema, sequence (+ owned by, set), default, data, pkey, index
    assert ids(selection) == SETTINGS | {
        216, 846, 6, 215, 3389, 3392, 3220, 3377, 3225, 3223
    }  # fmt: skip
    # The foreign key from shop.orders (not chosen) to it is left out, and said.
    assert selection.foreign_keys_left_out == ("orders_customer_id_fkey of shop.orders",)
    assert selection.left_out == ()


def test_two_tables_keep_the_foreign_key_between_them() -> None:
    chosen = tables.resolve(["shop.orders", "lines"], NAMES)
    selection = tables.select(ITEMS, chosen)
    kept = ids(selection)
    assert {218, 220, 3231, 3232, 223, 3391, 217, 3394, 219, 3390, 3393, 3221} <= kept
    assert 3230 not in kept and 216 not in kept and 221 not in kept and 222 not in kept
    assert selection.foreign_keys_left_out == ("orders_customer_id_fkey of shop.orders",)
    assert selection.left_out == ("VIEW shop v",)
    # The archive's order is kept (the --use-list file restores in its order).
    order = [e.dump_id for e in selection.entries]
    assert order == [i.entry.dump_id for i in ITEMS if i.entry.dump_id in kept]
    assert "foreign key(s) to or from tables not restored" in selection.notes()[0]


def test_ambiguous_and_unknown_names_are_refused_with_the_candidates() -> None:
    with pytest.raises(OperationFailed, match=r"public\.orders and shop\.orders"):
        tables.resolve(["orders"], NAMES)
    with pytest.raises(OperationFailed, match=r"close names: public\.orders, shop\.orders"):
        tables.resolve(["ordrs"], NAMES)
    with pytest.raises(OperationFailed, match="--list-tables"):
        tables.resolve(["zzzzzz"], NAMES)
    assert tables.resolve(["shop.lines", "lines"], NAMES) == [tables.TableName("shop", "lines")]


def test_a_table_whose_type_needs_another_table_is_refused() -> None:
    listing = (
        "10; 1259 1 TABLE public a app\n"
        "11; 1255 2 FUNCTION public f() app\n;\tdepends on: 10\n"
        "12; 1259 3 TABLE public b app\n;\tdepends on: 11\n"
    )
    items = tables.parse_items(listing)
    with pytest.raises(OperationFailed, match=r"public\.b needs public\.a"):
        tables.select(items, [tables.TableName("public", "b")])


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "needs a database name"),
        ("x" * 64, "at most 63 bytes"),
        ("template1", "system database"),
        ("postgres", "system database"),
        ("velocity_pg_staging_0011", "its own databases"),
        ("a\x00b", "NUL"),
    ],
)
def test_into_names_that_are_refused(name: str, problem: str) -> None:
    found = into.name_problem(name)
    assert found is not None and problem in found


def test_into_names_that_are_fine() -> None:
    assert into.name_problem("app_yesterday") is None
    assert into.name_problem("Käse copy") is None


def test_the_mark_reads_back_and_nothing_else_passes_for_it() -> None:
    mark = into.IntoMark("copy", 16999, "app_x.dump", "2026-12-07T03:00:00+00:00", "u@h", ("a.b",))
    assert into.parse_mark(mark.comment()) == mark
    assert into.parse_mark(None) is None
    assert into.parse_mark("velocity-pg-mark {not json") is None
    staged = 'x\nvelocity-pg-mark {"kind": "staged", "database": "copy", "oid": 1}'
    assert into.parse_mark(staged) is None


def test_list_tables_uses_the_manifest_statistics_where_known() -> None:
    stats = manifest.Statistics(
        at="2026-12-07T02:49:28+00:00",
        database_bytes=1,
        tables=(manifest.TableStatistics("shop", "orders", 1500, 65536, "reltuples"),),
    )
    record = manifest.Manifest.__new__(manifest.Manifest)
    object.__setattr__(record, "statistics", stats)
    listed = into.list_tables("s.dump", LISTING, record)
    text = "\n".join(listed.lines())
    assert "shop.orders" in text and "1,500" in text and "64.0 KiB" in text
    assert "public.customers" in text and "?" in text
    rows = {(t["schema"], t["table"]): t["rows"] for t in listed.to_json()["tables"]}  # type: ignore[attr-defined]
    assert rows[("shop", "orders")] == 1500 and rows[("public", "orders")] is None
    bare = into.list_tables("s.dump", LISTING, None)
    assert "not known" in bare.lines()[-1]

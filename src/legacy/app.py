"""The shop's old back office: a plain CRUD web app over its own PostgreSQL tables.

It knows nothing of events, brokers or Tidings: every request is one synchronous SQL
transaction (psycopg), and the tables keep the names they were given years ago::

    cust      (cust_no PK, cust_nm, cr_lim NUMERIC(12,2) dollars, upd_ts)
    prod      (prod_cd PK, prod_desc, unit_prc NUMERIC(10,2) dollars, upd_ts)
    stk_adj   (adj_id serial PK, prod_cd, adj_qty, rsn_cd 'CNT'|'DMG'|'RCV'|..., adj_ts)
    ord_hdr   (ord_no serial PK, cust_no, tot_amt NUMERIC(12,2), ord_ts) + ord_ln

The HTTP API (JSON; 404 for an unknown row, 409 for a duplicate, 422 for bad input)::

    GET    /                          an HTML page: customers, products, adjustments, orders
    POST   /customers                 {"cust_no", "cust_nm", "cr_lim"}
    PUT    /customers/{no}/credit     {"cr_lim"}
    DELETE /customers/{no}
    POST   /products                  {"prod_cd", "prod_desc", "unit_prc"}
    PUT    /products/{cd}/price       {"unit_prc"}
    DELETE /products/{cd}
    POST   /stock-adjustments         {"prod_cd", "adj_qty", "rsn_cd"}
    POST   /orders                    {"cust_no", "items": [{"prod_cd", "qty"}]}  (priced here)
    GET    /orders/{no}

Settings: ``LEGACY_DATABASE_URL`` (default postgresql://postgres@127.0.0.1:5432/tidings)
and ``LEGACY_SCHEMA`` (default ``legacy``), the schema its tables live in (created on
start if missing). Serve it with ``python -m legacy --port 8090``.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import psycopg
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

DDL = """
CREATE TABLE IF NOT EXISTS {s}.cust (
    cust_no VARCHAR(20) PRIMARY KEY, cust_nm VARCHAR(80) NOT NULL,
    cr_lim NUMERIC(12,2) NOT NULL DEFAULT 0, upd_ts TIMESTAMP NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS {s}.prod (
    prod_cd VARCHAR(20) PRIMARY KEY, prod_desc VARCHAR(80) NOT NULL,
    unit_prc NUMERIC(10,2), upd_ts TIMESTAMP NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS {s}.stk_adj (
    adj_id SERIAL PRIMARY KEY, prod_cd VARCHAR(20) NOT NULL REFERENCES {s}.prod,
    adj_qty INTEGER NOT NULL, rsn_cd VARCHAR(4) NOT NULL, adj_ts TIMESTAMP NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS {s}.ord_hdr (
    ord_no SERIAL PRIMARY KEY, cust_no VARCHAR(20) NOT NULL REFERENCES {s}.cust,
    tot_amt NUMERIC(12,2) NOT NULL, ord_ts TIMESTAMP NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS {s}.ord_ln (
    ord_no INTEGER REFERENCES {s}.ord_hdr, ln_no INTEGER, prod_cd VARCHAR(20) NOT NULL,
    qty INTEGER NOT NULL, PRIMARY KEY (ord_no, ln_no));
"""
TABLES = ("cust", "prod", "stk_adj")  # what the back office owns (and CDC captures)


def database_url() -> str:
    return os.environ.get("LEGACY_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tidings")


def schema() -> str:
    name = os.environ.get("LEGACY_SCHEMA", "legacy")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", name):
        raise ValueError(f"LEGACY_SCHEMA={name!r}: lower-case letters, digits and _ only")
    return name


def create_tables(url: str | None = None, in_schema: str | None = None) -> None:
    """Create the schema and its tables if missing (what the old installer did)."""
    name = in_schema or schema()
    with psycopg.connect(url or database_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))
        conn.execute(DDL.format(s=name).encode())


@contextmanager
def transaction() -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """One connection, one transaction: committed on success, rolled back on error."""
    with psycopg.connect(database_url(), row_factory=dict_row) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema())))
        yield conn


class NewCustomer(BaseModel):
    cust_no: str = Field(min_length=1, max_length=20)
    cust_nm: str = Field(min_length=1, max_length=80)
    cr_lim: Decimal = Field(ge=0, decimal_places=2, max_digits=12)


class Credit(BaseModel):
    cr_lim: Decimal = Field(ge=0, decimal_places=2, max_digits=12)


class NewProduct(BaseModel):
    prod_cd: str = Field(min_length=1, max_length=20)
    prod_desc: str = Field(min_length=1, max_length=80)
    unit_prc: Decimal | None = Field(default=None, ge=0, decimal_places=2, max_digits=10)


class Price(BaseModel):
    unit_prc: Decimal = Field(ge=0, decimal_places=2, max_digits=10)


class Adjustment(BaseModel):
    prod_cd: str = Field(min_length=1, max_length=20)
    adj_qty: int
    rsn_cd: str = Field(min_length=1, max_length=4)


class Item(BaseModel):
    prod_cd: str
    qty: int = Field(gt=0)


class LegacyOrder(BaseModel):
    cust_no: str
    items: list[Item] = Field(min_length=1)


app = FastAPI(title="Back office (legacy)")


def _one(conn: psycopg.Connection[dict[str, Any]], query: str, *args: Any) -> dict[str, Any]:
    row = conn.execute(query.encode(), args).fetchone()
    if row is None:
        raise HTTPException(404, f"no such row: {args[-1]}")
    return row


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/customers", status_code=201)
def add_customer(body: NewCustomer) -> dict[str, Any]:
    try:
        with transaction() as conn:
            conn.execute(
                b"INSERT INTO cust (cust_no, cust_nm, cr_lim) VALUES (%s, %s, %s)",
                (body.cust_no, body.cust_nm, body.cr_lim),
            )
    except psycopg.errors.UniqueViolation:
        raise HTTPException(409, f"customer {body.cust_no} exists already") from None
    return body.model_dump(mode="json")


@app.put("/customers/{cust_no}/credit")
def set_credit(cust_no: str, body: Credit) -> dict[str, Any]:
    with transaction() as conn:
        return _one(
            conn,
            "UPDATE cust SET cr_lim = %s, upd_ts = now() WHERE cust_no = %s "
            "RETURNING cust_no, cust_nm, cr_lim::text",
            body.cr_lim,
            cust_no,
        )


@app.delete("/customers/{cust_no}", status_code=204)
def delete_customer(cust_no: str) -> None:
    with transaction() as conn:
        _one(conn, "DELETE FROM cust WHERE cust_no = %s RETURNING cust_no", cust_no)


@app.post("/products", status_code=201)
def add_product(body: NewProduct) -> dict[str, Any]:
    try:
        with transaction() as conn:
            conn.execute(
                b"INSERT INTO prod (prod_cd, prod_desc, unit_prc) VALUES (%s, %s, %s)",
                (body.prod_cd, body.prod_desc, body.unit_prc),
            )
    except psycopg.errors.UniqueViolation:
        raise HTTPException(409, f"product {body.prod_cd} exists already") from None
    return body.model_dump(mode="json")


@app.put("/products/{prod_cd}/price")
def set_price(prod_cd: str, body: Price) -> dict[str, Any]:
    with transaction() as conn:
        return _one(
            conn,
            "UPDATE prod SET unit_prc = %s, upd_ts = now() WHERE prod_cd = %s "
            "RETURNING prod_cd, prod_desc, unit_prc::text",
            body.unit_prc,
            prod_cd,
        )


@app.delete("/products/{prod_cd}", status_code=204)
def delete_product(prod_cd: str) -> None:
    with transaction() as conn:
        _one(conn, "DELETE FROM prod WHERE prod_cd = %s RETURNING prod_cd", prod_cd)


@app.post("/stock-adjustments", status_code=201)
def adjust_stock(body: Adjustment) -> dict[str, Any]:
    try:
        with transaction() as conn:
            return _one(
                conn,
                "INSERT INTO stk_adj (prod_cd, adj_qty, rsn_cd) VALUES (%s, %s, %s) "
                "RETURNING adj_id, prod_cd, adj_qty, rsn_cd",
                body.prod_cd,
                body.adj_qty,
                body.rsn_cd,
            )
    except psycopg.errors.ForeignKeyViolation:
        raise HTTPException(422, f"no product {body.prod_cd}: add it first") from None


@app.post("/orders", status_code=201)
def place_order(body: LegacyOrder) -> dict[str, Any]:
    """The old way to place an order: priced from ``prod`` and stored here, nothing else
    (the strangler facade in front of this app sends it to the new order service)."""
    with transaction() as conn:
        _one(conn, "SELECT cust_no FROM cust WHERE cust_no = %s", body.cust_no)
        total = Decimal(0)
        for item in body.items:
            row = _one(conn, "SELECT unit_prc FROM prod WHERE prod_cd = %s", item.prod_cd)
            if row["unit_prc"] is None:
                raise HTTPException(422, f"product {item.prod_cd} has no price yet")
            total += row["unit_prc"] * item.qty
        order = _one(
            conn,
            "INSERT INTO ord_hdr (cust_no, tot_amt) VALUES (%s, %s) RETURNING ord_no",
            body.cust_no,
            total,
        )
        for n, item in enumerate(body.items, 1):
            conn.execute(
                b"INSERT INTO ord_ln VALUES (%s, %s, %s, %s)",
                (order["ord_no"], n, item.prod_cd, item.qty),
            )
    return {"ord_no": order["ord_no"], "tot_amt": str(total), "status": "BOOKED"}


@app.get("/orders/{ord_no}")
def get_order(ord_no: int) -> dict[str, Any]:
    with transaction() as conn:
        head = _one(
            conn, "SELECT ord_no, cust_no, tot_amt::text FROM ord_hdr WHERE ord_no = %s", ord_no
        )
        lines = conn.execute(
            b"SELECT prod_cd, qty FROM ord_ln WHERE ord_no = %s ORDER BY ln_no", (ord_no,)
        ).fetchall()
    return {**head, "items": lines}


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>"
        for row in rows
    )
    return f"<table border=1><tr>{head}</tr>{body}</table>"


@app.get("/", response_class=HTMLResponse)
def page() -> str:
    with transaction() as conn:
        parts = {
            title: conn.execute(query).fetchall()
            for title, query in {
                "Customers": b"SELECT cust_no, cust_nm, cr_lim FROM cust ORDER BY cust_no",
                "Products": b"SELECT prod_cd, prod_desc, unit_prc FROM prod ORDER BY prod_cd",
                "Stock adjustments": b"SELECT * FROM stk_adj ORDER BY adj_id DESC LIMIT 20",
                "Orders": b"SELECT * FROM ord_hdr ORDER BY ord_no DESC LIMIT 20",
            }.items()
        }
    sections = "".join(f"<h2>{t}</h2>{_table(rows)}" for t, rows in parts.items())
    return f"<html><body><h1>Back office</h1>{sections}</body></html>"

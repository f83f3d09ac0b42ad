"""Synthetic customer / transaction generator for the churn platform.

Framework-free (numpy + pyarrow + fsspec only): no dagster, no mlflow.

The simulation, per customer:

* static attributes (plan, payment method, region, channel, age, support tickets, ...);
* a latent churn date drawn from an exponential hazard that depends on those attributes
  (monthly plan, many support tickets, young age, electronic cheque payment, partner channel
  and consumers rather than businesses churn more), or none if it falls after the period;
* purchases from a thinned Poisson process: a per-customer rate (gamma distributed) times a
  weekly x monthly seasonality profile (December peak), starting at signup (or period start),
  fading out over the weeks before churn and stopping at churn;
* heavy-tailed spend: lognormal average order value per customer x lognormal per order noise x
  category price factor; about 4% of rows are returns (negative amount, invoice id ``C...``,
  sales ``I...``).

Ids: customers ``C`` + 7 digits (``C0000001`` ...); invoices ``I``/``C`` + 10 digits in a normal
batch. A drift batch (see :func:`generate`) uses a 6-digit key derived from its batch name:
new customers ``C`` + key + 7 digits, invoices ``I``/``C`` + key + 9 digits, so batches
appended to one landing zone never collide.

Randomness is drawn per fixed block of 1000 customers from ``numpy.random.default_rng`` seeded
with ``(seed, stream, [batch key,] block)``, never global state: a normal batch depends only on
``seed``, ``customers``, ``days`` and ``start``; ``chunk_customers`` only changes how rows are
split over part files (and the row order inside them), ``fmt`` and ``batch_name`` only how
files are written. Same arguments give byte-identical files.
"""

from __future__ import annotations

import datetime
import hashlib
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

__all__ = ["GenerationSummary", "generate"]

# --------------------------------------------------------------------------- vocabularies
PLANS = ("monthly", "annual", "two_year")
PAYMENT_METHODS = ("credit_card", "bank_transfer", "paypal", "electronic_check")
REGIONS = ("uk", "dach", "benelux_france", "southern_europe", "north_america", "apac")
CHANNELS = ("web", "store", "partner")
COUNTRIES = ("GB", "DE", "FR", "NL", "ES", "IT", "US", "CA", "AU", "JP")
CATEGORIES = (
    "electronics",
    "fashion",
    "home",
    "beauty",
    "sports",
    "toys",
    "books",
    "grocery",
)
DRIFT_CATEGORIES = (*CATEGORIES, "gift_cards")

# Home-country choice per region: (first country, second country, P(first)).
_REGION_COUNTRY_A = np.array([0, 1, 2, 4, 6, 8])  # GB, DE, FR, ES, US, AU
_REGION_COUNTRY_B = np.array([0, 1, 3, 5, 7, 9])  # GB, DE, NL, IT, CA, JP
_REGION_COUNTRY_P = np.array([1.0, 1.0, 0.6, 0.55, 0.8, 0.6])

_PLAN_P = np.array([0.55, 0.30, 0.15])
_PAY_P = np.array([0.35, 0.25, 0.22, 0.18])
_REGION_P = np.array([0.22, 0.20, 0.18, 0.15, 0.15, 0.10])
_CHANNEL_P = np.array([0.55, 0.30, 0.15])
_CAT_P = np.array([0.14, 0.20, 0.15, 0.12, 0.10, 0.09, 0.10, 0.10])
_CAT_PRICE = np.array([2.6, 1.1, 1.4, 0.8, 1.2, 0.9, 0.5, 0.45, 1.5])  # last: gift_cards

# Drift batches: a new cohort from a campaign (monthly plans, APAC/North America, partner
# channel, younger, more tickets, higher fees) plus shifted recent behaviour of everyone
# (higher order values, more returns, a new "gift_cards" category).
_DRIFT_PLAN_P = np.array([0.78, 0.16, 0.06])
_DRIFT_PAY_P = np.array([0.25, 0.15, 0.25, 0.35])
_DRIFT_REGION_P = np.array([0.10, 0.10, 0.10, 0.10, 0.25, 0.35])
_DRIFT_CHANNEL_P = np.array([0.40, 0.15, 0.45])
_DRIFT_NEWCOMER_SHARE = 0.25  # new customers per existing customer in a drift batch
_DRIFT_EXISTING_RATE = 0.75  # extra activity of existing customers (on top of their normal)
_DRIFT_AMOUNT = 1.6
_DRIFT_GIFT_CARDS = 0.15

# Churn hazard (per day): log-linear in attributes.
_BASE_HAZARD = 0.00085
_PLAN_EFFECT = np.array([0.0, -1.1, -2.0])
_PAY_EFFECT = np.array([0.0, -0.2, 0.15, 0.6])
_CHANNEL_EFFECT = np.array([0.0, -0.15, 0.25])
_TICKET_EFFECT = 0.17  # per support ticket, capped at 12 tickets

# Activity: mean orders per active customer-day (calibrated to ~50 orders per customer over 540
# days with the default population mix) and the fade-out window before churn.
_BASE_RATE = 0.1325
_FADE_DAYS = 42.0
_FADE_FLOOR = 0.03
_RETURN_RATE = 0.04
_MAX_ORDER = 50_000.0  # per order; the synthetic data set config allows |amount| <= 1e5
_DRIFT_RETURN_RATE = 0.10
_DRIFT_WINDOW_DAYS = 60
_HOME_COUNTRY_P = 0.92
_FAVOURITE_CAT_P = 0.45

# Seasonality: Monday..Sunday and January..December multipliers.
_WEEKDAY = np.array([0.88, 0.90, 0.94, 0.98, 1.08, 1.22, 1.00])
_MONTH = np.array([0.82, 0.86, 0.95, 0.97, 1.00, 0.95, 0.90, 0.92, 1.00, 1.05, 1.30, 1.65])
_HOUR_W = np.array(
    [0.3, 0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 1.0, 1.6, 2.0, 2.3, 2.6,
     3.0, 2.8, 2.4, 2.3, 2.4, 2.8, 3.3, 3.8, 3.9, 3.2, 2.0, 0.9]
)  # fmt: skip
_HOUR_P = _HOUR_W / _HOUR_W.sum()

# Random streams (second element of the seed sequence).
_S_CUSTOMERS, _S_TX, _S_DRIFT_CUSTOMERS, _S_DRIFT_TX = 0, 1, 2, 3
# Id widths: base customers "C" + 7 digits, drift newcomers "C" + 6-digit batch key + 7 digits;
# invoices "I"/"C" + 10 digits, drift invoices + 6-digit batch key + 9 digits.
_ID_WIDTH, _DRIFT_ID_WIDTH = 7, 13
_INVOICE_WIDTH, _DRIFT_INVOICE_WIDTH = 10, 15
_BLOCK = 1000  # customers per RNG block (fixed: data is independent of chunk_customers)
_CUSTOMER_KEYS = (
    "idx", "signup", "plan", "pay", "region", "channel", "age", "tickets", "business", "fee"
)  # fmt: skip


@dataclass(frozen=True)
class GenerationSummary:
    """What :func:`generate` wrote.

    ``customers``/``transactions`` count the rows written (for a drift batch ``customers`` is
    the new cohort only). ``start``/``end`` delimit the transaction window (``end``
    exclusive); for a drift batch ``start`` is the first day of the final 60-day window.
    """

    customers: int
    transactions: int
    files: list[str]  # paths written, relative to out_root
    start: datetime.date
    end: datetime.date  # exclusive end of the simulated period
    seed: int
    drifted: bool


@dataclass(frozen=True)
class _Profile:
    """Attribute mix of a customer population."""

    plan_p: np.ndarray
    pay_p: np.ndarray
    region_p: np.ndarray
    channel_p: np.ndarray
    age_mean: float
    business_p: float
    extra_tickets: float
    fee_mult: float


_BASE = _Profile(
    plan_p=_PLAN_P,
    pay_p=_PAY_P,
    region_p=_REGION_P,
    channel_p=_CHANNEL_P,
    age_mean=43.0,
    business_p=0.15,
    extra_tickets=0.0,
    fee_mult=1.0,
)
_NEWCOMERS = _Profile(
    plan_p=_DRIFT_PLAN_P,
    pay_p=_DRIFT_PAY_P,
    region_p=_DRIFT_REGION_P,
    channel_p=_DRIFT_CHANNEL_P,
    age_mean=33.0,
    business_p=0.08,
    extra_tickets=1.5,
    fee_mult=1.15,
)


@dataclass
class _Block:
    """Simulated customers (and their transactions) of one RNG block."""

    lo: int  # global index of the first customer
    cust: dict[str, np.ndarray]
    tx: dict[str, np.ndarray]  # "cust" holds the global customer index of each row
    emit_customers: bool  # False for existing customers seen again by a drift batch


# --------------------------------------------------------------------------- simulation
def _season(start: datetime.date, days: int) -> np.ndarray:
    """Daily purchase-intensity multiplier (weekday x month) for each day of the period."""
    dates = np.datetime64(start, "D") + np.arange(days)
    dow = (dates.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday == 0
    month = dates.astype("datetime64[M]").astype(np.int64) % 12
    return _WEEKDAY[dow] * _MONTH[month]


def _simulate_customers(
    rng: np.random.Generator,
    lo: int,
    hi: int,
    days: int,
    profile: _Profile = _BASE,
    signup_from: int | None = None,
) -> dict[str, np.ndarray]:
    """Attributes and latent churn of customers ``lo..hi-1`` (global indices).

    Day offsets are relative to ``start``. Signups: ~70% before ``start`` (up to 3 years) and
    the rest during the period, or, with ``signup_from``, all in ``[signup_from, days)``.
    ``churn_day`` is a float day offset (churn hazard starts at signup or ``start``), ``inf``
    when the latent churn falls after the period.
    """
    n = hi - lo
    before = rng.random(n) < 0.7
    signup_before = -rng.integers(1, 3 * 365 + 1, n)
    signup_during = rng.integers(0, max(days - 1, 1), n)
    signup = np.where(before, signup_before, signup_during).astype(np.int64)
    if signup_from is not None:
        signup = rng.integers(signup_from, days, n).astype(np.int64)
    plan = rng.choice(3, n, p=profile.plan_p)
    pay = rng.choice(4, n, p=profile.pay_p)
    region = rng.choice(6, n, p=profile.region_p)
    home = np.where(
        rng.random(n) < _REGION_COUNTRY_P[region],
        _REGION_COUNTRY_A[region],
        _REGION_COUNTRY_B[region],
    )
    channel = rng.choice(3, n, p=profile.channel_p)
    age = np.clip(np.rint(rng.normal(profile.age_mean, 14.0, n)), 18, 90).astype(np.int64)
    tickets = rng.poisson(rng.gamma(0.8, 1.9, n) + profile.extra_tickets).astype(np.int64)
    business = rng.random(n) < profile.business_p
    fee_noise = rng.lognormal(0.0, 0.12, n) * profile.fee_mult
    rate = _BASE_RATE * rng.gamma(1.6, 1 / 1.6, n) * np.where(business, 1.3, 1.0)
    aov = np.exp(rng.normal(np.log(28.0), 1.0, n)) * np.where(business, 2.2, 1.0)
    fav = rng.choice(len(CATEGORIES), n, p=_CAT_P)
    frailty = rng.normal(0.0, 0.35, n)
    wait = rng.exponential(1.0, n)

    young = np.where(age < 30, 0.55, np.where(age < 40, 0.2, np.where(age >= 65, -0.2, 0.0)))
    log_h = (
        np.log(_BASE_HAZARD)
        + _PLAN_EFFECT[plan]
        + _PAY_EFFECT[pay]
        + _CHANNEL_EFFECT[channel]
        + _TICKET_EFFECT * np.minimum(tickets, 12)
        + young
        - 0.35 * business
        + frailty
    )
    churn = np.maximum(signup, 0) + wait / np.exp(log_h)
    churn = np.where(churn < days, churn, np.inf)
    fee = np.array([29.99, 24.99, 19.99])[plan] * np.where(business, 1.8, 1.0) * fee_noise
    return {
        "idx": np.arange(lo, hi, dtype=np.int64),
        "signup": signup,
        "plan": plan,
        "pay": pay,
        "region": region,
        "home": home,
        "channel": channel,
        "age": age,
        "tickets": tickets,
        "business": business,
        "fee": np.round(np.maximum(fee, 1.0), 2),
        "rate": rate,
        "aov": aov,
        "fav": fav,
        "churn_day": churn,
    }


def _simulate_transactions(
    rng: np.random.Generator,
    cust: dict[str, np.ndarray],
    days: int,
    season: np.ndarray,
    drift: bool = False,
    window_start: int = 0,
) -> dict[str, np.ndarray]:
    """Transactions of one block of customers in ``[window_start, days)``.

    A thinned Poisson process per customer (vectorised over the block): rate x seasonality x
    fade-out before the latent churn, from signup to churn. Returns arrays ``cust`` (global
    customer index), ``secs`` (seconds since ``start``), ``amount``, ``category`` and
    ``country``, ordered by (time, customer).
    """
    peak = float(season.max())
    churn = cust["churn_day"]
    a = np.maximum(cust["signup"], window_start).astype(np.float64)
    b = np.minimum(churn, float(days))
    span = np.clip(b - a, 0.0, None)

    n_cand = rng.poisson(cust["rate"] * peak * span)
    local = np.repeat(np.arange(len(span)), n_cand)
    t = a[local] + rng.random(local.size) * span[local]
    day = np.minimum(t.astype(np.int64), days - 1)
    fade = np.clip((churn[local] - t) / _FADE_DAYS, _FADE_FLOOR, 1.0) ** 1.5
    keep = rng.random(local.size) < season[day] / peak * fade
    local, day = local[keep], day[keep]
    m = local.size

    secs = day * 86_400 + rng.choice(24, m, p=_HOUR_P) * 3_600 + rng.integers(0, 3_600, m)
    cat = np.where(
        rng.random(m) < _FAVOURITE_CAT_P,
        cust["fav"][local],
        rng.choice(len(CATEGORIES), m, p=_CAT_P),
    )
    if drift:
        cat = np.where(rng.random(m) < _DRIFT_GIFT_CARDS, len(CATEGORIES), cat)  # gift_cards
    amount = cust["aov"][local] * _CAT_PRICE[cat] * rng.lognormal(-0.1, 0.45, m)
    if drift:
        amount = amount * _DRIFT_AMOUNT
    amount = np.round(np.clip(amount, 0.5, _MAX_ORDER), 2)
    is_return = rng.random(m) < (_DRIFT_RETURN_RATE if drift else _RETURN_RATE)
    amount = np.where(is_return, -amount, amount)
    country = np.where(
        rng.random(m) < _HOME_COUNTRY_P, cust["home"][local], rng.integers(0, len(COUNTRIES), m)
    )
    idx = cust["idx"][local]
    order = np.lexsort((idx, secs))
    return {
        "cust": idx[order],
        "secs": secs[order],
        "amount": amount[order],
        "category": cat[order].astype(np.int8),
        "country": country[order].astype(np.int8),
    }


def _batch_key(batch_name: str) -> int:
    """Stable 64-bit key of a batch name (seeds and ids of drift batches)."""
    return int.from_bytes(hashlib.sha256(batch_name.encode()).digest()[:8], "big")


def _newcomer_count(customers: int) -> int:
    return max(1, round(customers * _DRIFT_NEWCOMER_SHARE))


def _base_customers(seed: int, block: int, lo: int, hi: int, days: int) -> dict[str, np.ndarray]:
    """The (normal-batch) customers ``lo..hi-1`` of RNG block ``block``."""
    return _simulate_customers(np.random.default_rng([seed, _S_CUSTOMERS, block]), lo, hi, days)


def _blocks(
    seed: int, customers: int, days: int, start: datetime.date, drift: bool, key: int
) -> Iterator[_Block]:
    """Yield all RNG blocks in global-index order, with invoice numbers assigned.

    Normal batch: the ``customers`` base customers. Drift batch: the base customers again
    (same latent churn, transactions in the final window only, not re-emitted as customer
    rows), then a cohort of newcomers (global indices from ``customers``).
    """
    season = _season(start, days)
    invoice = (key % 10**6) * 10**9 + 1 if drift else 1
    window = days - min(_DRIFT_WINDOW_DAYS, days) if drift else 0
    spans = [(False, block, lo, min(lo + _BLOCK, customers))
             for block, lo in enumerate(range(0, customers, _BLOCK))]  # fmt: skip
    if drift:
        n_total = customers + _newcomer_count(customers)
        spans += [(True, block, lo, min(lo + _BLOCK, n_total))
                  for block, lo in enumerate(range(customers, n_total, _BLOCK))]  # fmt: skip
    for newcomers, block, lo, hi in spans:
        if not drift:
            cust = _base_customers(seed, block, lo, hi, days)
            tx_rng = np.random.default_rng([seed, _S_TX, block])
            tx = _simulate_transactions(tx_rng, cust, days, season)
        elif not newcomers:
            cust = _base_customers(seed, block, lo, hi, days)
            cust["rate"] = cust["rate"] * _DRIFT_EXISTING_RATE
            tx_rng = np.random.default_rng([seed, _S_DRIFT_TX, key, 0, block])
            tx = _simulate_transactions(tx_rng, cust, days, season, True, window)
        else:
            c_rng = np.random.default_rng([seed, _S_DRIFT_CUSTOMERS, key, block])
            cust = _simulate_customers(c_rng, lo, hi, days, _NEWCOMERS, signup_from=window)
            tx_rng = np.random.default_rng([seed, _S_DRIFT_TX, key, 1, block])
            tx = _simulate_transactions(tx_rng, cust, days, season, True, window)
        tx["invoice"] = np.arange(invoice, invoice + tx["cust"].size, dtype=np.int64)
        invoice += tx["cust"].size
        yield _Block(lo=lo, cust=cust, tx=tx, emit_customers=not drift or newcomers)


# --------------------------------------------------------------------------- arrow tables
def _dictionary(codes: np.ndarray, values: tuple[str, ...]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(codes.astype(np.int32)), pa.array(values, type=pa.string())
    )


def _prefixed(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pa.array(numbers, type=pa.int64()).cast(pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


@dataclass(frozen=True)
class _Naming:
    """How global customer indices and invoice numbers become string ids."""

    customers: int  # base customers: indices below get "C" + 7 digits
    key: int  # drift batch key (0 for a normal batch)
    drift: bool

    def customer_ids(self, idx: np.ndarray) -> pa.Array:
        base = _prefixed("C", idx + 1, _ID_WIDTH)
        if idx.size == 0 or idx.max() < self.customers:
            return base
        new = (self.key % 10**6) * 10**7 + np.maximum(idx - self.customers, 0) + 1
        return pc.if_else(
            pa.array(idx < self.customers), base, _prefixed("C", new, _DRIFT_ID_WIDTH)
        )

    def invoice_ids(self, numbers: np.ndarray, is_return: np.ndarray) -> pa.Array:
        # Returns/cancellations get a "C" prefix (as in the UCI Online Retail data), sales
        # an "I" (never all-digit ids that CSV readers would turn into integers).
        width = _DRIFT_INVOICE_WIDTH if self.drift else _INVOICE_WIDTH
        digits = pc.utf8_lpad(pa.array(numbers, type=pa.int64()).cast(pa.string()), width, "0")
        return pc.binary_join_element_wise(pc.if_else(pa.array(is_return), "C", "I"), digits, "")


def _customers_table(
    parts: list[dict[str, np.ndarray]], start: datetime.date, naming: _Naming
) -> pa.Table:
    c = {k: np.concatenate([p[k] for p in parts]) for k in _CUSTOMER_KEYS}
    signup = np.datetime64(start, "D") + c["signup"]
    return pa.table(
        {
            "customer_id": naming.customer_ids(c["idx"]),
            "signup_date": pa.array(signup, type=pa.date32()),
            "plan": _dictionary(c["plan"], PLANS),
            "payment_method": _dictionary(c["pay"], PAYMENT_METHODS),
            "region": _dictionary(c["region"], REGIONS),
            "channel": _dictionary(c["channel"], CHANNELS),
            "age": pa.array(c["age"], type=pa.int64()),
            "support_tickets": pa.array(c["tickets"], type=pa.int64()),
            "is_business": pa.array(c["business"], type=pa.bool_()),
            "monthly_fee": pa.array(c["fee"], type=pa.float64()),
        }
    )


def _transactions_table(
    parts: list[dict[str, np.ndarray]], start: datetime.date, naming: _Naming
) -> pa.Table:
    keys = list(parts[0])
    tx = {k: np.concatenate([p.pop(k) for p in parts]) for k in keys}
    order = np.lexsort((tx["invoice"], tx["secs"]))
    for k in keys:
        tx[k] = tx[k][order]
    del order
    cols = {"invoice_id": naming.invoice_ids(tx.pop("invoice"), tx["amount"] < 0)}
    cols["customer_id"] = naming.customer_ids(tx.pop("cust"))
    ts = (np.datetime64(start, "s") + tx.pop("secs")).astype("datetime64[us]")
    cols["timestamp"] = pa.array(ts, type=pa.timestamp("us"))
    del ts
    cols["amount"] = pa.array(tx.pop("amount"), type=pa.float64())
    cats = DRIFT_CATEGORIES if naming.drift else CATEGORIES
    cols["category"] = _dictionary(tx.pop("category"), cats)
    cols["country"] = _dictionary(tx.pop("country"), COUNTRIES)
    return pa.table(cols)


def _write(table: pa.Table, fs: fsspec.AbstractFileSystem, path: str, fmt: str) -> None:
    with fs.open(path, "wb") as fh:
        if fmt == "parquet":
            pq.write_table(table, fh, compression="zstd")
        else:
            # Plain strings and second-resolution timestamps read back cleanly everywhere.
            cols = []
            for field, col in zip(table.schema, table.columns, strict=True):
                if pa.types.is_dictionary(field.type):
                    col = col.cast(pa.string())
                elif pa.types.is_timestamp(field.type):
                    col = col.cast(pa.timestamp("s"))
                cols.append(col)
            plain = pa.table(cols, names=table.column_names)
            pacsv.write_csv(plain, fh, pacsv.WriteOptions(quoting_style="needed"))


# --------------------------------------------------------------------------- public API
def generate(
    out_root: str,
    *,
    customers: int = 10_000,
    days: int = 540,
    seed: int = 42,
    start: datetime.date = datetime.date(2024, 1, 1),
    fmt: str = "parquet",
    chunk_customers: int = 50_000,
    drift: bool = False,
    storage_options: dict | None = None,
    batch_name: str = "batch-0000",
) -> GenerationSummary:
    """Generate a synthetic churn dataset (customers + transactions) under ``out_root``.

    Writes ``{out_root}/customers/{batch_name}.{fmt}`` (one file) and
    ``{out_root}/transactions/{batch_name}-part-{i:05d}.{fmt}`` (one part per
    ``chunk_customers`` customers, so memory stays bounded by the chunk size).

    Args:
        out_root: Local directory or fsspec URL (e.g. ``s3://bucket/landing/synthetic``).
        customers: Number of base customers (ids ``C0000001`` ... in order). A drift batch
            needs the same value (and ``seed``, ``days``, ``start``) as the batch it extends.
        days: Length of the simulated period ``[start, start + days)``.
        seed: Non-negative seed; same arguments give byte-identical files.
        start: First day of the period.
        fmt: ``"parquet"`` (zstd, dictionary-encoded categoricals) or ``"csv"``.
        chunk_customers: Customers per transactions part file. Only affects file splitting and
            row order, not the rows themselves.
        drift: Produce a shifted batch to append beside the normal one, for drift demos. Its
            transactions cover only the last 60 days of the period: extra purchases of the
            existing customers ``C0000001...`` (same seed: same latent churn, so churned
            customers stay silent) and of a new cohort (``customers // 4``, signed up in
            those 60 days) with higher order values, more returns and a new category
            ``"gift_cards"``. Its customers file holds only the new cohort (ids
            ``"C" + 6-digit batch key + 7 digits``, derived from ``batch_name``, so they never
            collide with the base ids or another drift batch), with a shifted plan /
            payment / region / channel mix, younger, more tickets and higher fees.
        storage_options: Passed to fsspec (credentials, ``client_kwargs`` ...).
        batch_name: File stem; pass a distinct one when writing a drift batch beside a normal
            one. Does not affect the data of a normal batch; seeds a drift batch (two drift
            batches with different names differ and have disjoint ids).

    Returns:
        A :class:`GenerationSummary`: rows written (customers file, transactions), the
        relative paths written, and the transaction window.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    if customers < 1 or days < 1 or chunk_customers < 1:
        raise ValueError("customers, days and chunk_customers must be >= 1")
    if seed < 0:
        raise ValueError("seed must be non-negative")
    if not batch_name or "/" in batch_name:
        raise ValueError(f"invalid batch_name {batch_name!r}")

    fs, root = fsspec.core.url_to_fs(out_root, **(storage_options or {}))
    root = root.rstrip("/")
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    if local:
        for sub in ("customers", "transactions"):
            fs.makedirs(posixpath.join(root, sub), exist_ok=True)

    key = _batch_key(batch_name) if drift else 0
    naming = _Naming(customers=customers, key=key, drift=drift)
    n_total = customers + (_newcomer_count(customers) if drift else 0)
    files: list[str] = []
    customer_parts: list[dict[str, np.ndarray]] = []
    n_tx = 0
    blocks = _blocks(seed, customers, days, start, drift, key)
    pending: _Block | None = None  # a block straddling two chunks
    for part, lo in enumerate(range(0, n_total, chunk_customers)):
        hi = min(lo + chunk_customers, n_total)
        tx_parts: list[dict[str, np.ndarray]] = []
        while True:
            blk = pending if pending is not None else next(blocks)
            pending = None
            blk_hi = blk.lo + blk.cust["idx"].size
            if blk.lo >= lo and blk_hi <= hi:
                cust = {k: blk.cust[k] for k in _CUSTOMER_KEYS}
                tx_parts.append(blk.tx)
            else:  # straddles the chunk boundary: keep only our customers
                cm = (blk.cust["idx"] >= lo) & (blk.cust["idx"] < hi)
                tm = (blk.tx["cust"] >= lo) & (blk.tx["cust"] < hi)
                cust = {k: blk.cust[k][cm] for k in _CUSTOMER_KEYS}
                tx_parts.append({k: v[tm] for k, v in blk.tx.items()})
                if blk_hi > hi:
                    pending = blk
            if blk.emit_customers:
                customer_parts.append(cust)
            if blk_hi >= hi:
                break
        table = _transactions_table(tx_parts, start, naming)
        rel = f"transactions/{batch_name}-part-{part:05d}.{fmt}"
        _write(table, fs, posixpath.join(root, rel), fmt)
        files.append(rel)
        n_tx += table.num_rows
        del table, tx_parts

    customers_table = _customers_table(customer_parts, start, naming)
    rel = f"customers/{batch_name}.{fmt}"
    _write(customers_table, fs, posixpath.join(root, rel), fmt)
    files.insert(0, rel)

    end = start + datetime.timedelta(days=days)
    window_start = end - datetime.timedelta(days=min(_DRIFT_WINDOW_DAYS, days)) if drift else start
    return GenerationSummary(
        customers=customers_table.num_rows,
        transactions=n_tx,
        files=files,
        start=window_start,
        end=end,
        seed=seed,
        drifted=drift,
    )

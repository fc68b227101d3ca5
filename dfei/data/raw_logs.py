"""Raw daily click logs: what a team's own logs look like before `prepare_data.py csv` converts them.

`generate_raw_logs(out, day, rows, seed)` writes one day of impressions to one CSV or Parquet file.
All days of a seed share one world: users and items are ids whose attributes depend only on (seed,
id): a latent vector (dim 8), a bias, a heavy-tailed activity / popularity, a preferred domain; users
also a home city, a device, an age; items a category (`item_code`), a price, a lifetime. Domains
(`DOMAINS`) differ in size and CTR (2 %..15 %) and score with their own preference transform M_d and
price / device / hour / age effects. Drift: day 0's population is sized from `rows` (users rows / 5,
items rows / 10, at least 500 / 300: use one `rows` for all days of a study); each later day adds 3 %
new users and 6 % new items (new ids; ~4 % of its rows come from that day's new users, ~7 % show its
new items); an item stops appearing after Geometric(0.04) days; item popularity follows a per-item
trend and a daily jitter.

Clicks: logit = 0.6 u' M_d v / sqrt(8) + b_user + b_item + effects of item_code, price, device, hour,
age, city + c_d; clicked ~ Bernoulli(sigmoid(logit)), i.e. logit + Logistic(0, 1) noise > 0. c_d is
calibrated each day on a 2^17-row sample to domain d's CTR. The true probability is not written; its
AUC on the day's rows, the ceiling no model beats in expectation, is the summary's `oracle_auc`.

Columns: request_id (str "r<day>-<row:09d>"), ts (str "2026-11-01 13:45:12", day 0 = 2026-11-01, rows
in time order), domain (str), user_id (str "u0001234"), item_id (str "i000567"), item_code (str: "7",
"07", "007" are different categories with different click rates), city (str, 30 values, ~4 % missing),
device (ios / android / web), price (float, ~6 % missing), user_age (int, ~10 % missing), clicked (0/1).
Missing: an empty CSV cell, a Parquet null. Rows are drawn in chunks of 2^16 from seeded streams:
memory is bounded by the population, and (seed, day, rows) gives identical bytes.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dfei.atomic import atomic_write
from dfei.errors import ConfigError, PathExistsError


@dataclass(frozen=True)
class RawDomain:
    """A domain of the logs: its `domain` column value, share of a day's rows and target CTR."""

    name: str
    share: float  # expected fraction of a day's rows
    ctr: float  # target click-through rate, calibrated each day


DOMAINS = (RawDomain("home_feed", 0.42, 0.04), RawDomain("video", 0.25, 0.08), RawDomain("search", 0.15, 0.12),
           RawDomain("mall", 0.11, 0.02), RawDomain("live", 0.07, 0.15))
CITIES = tuple("Shanghai Beijing Guangzhou Shenzhen Chengdu Hangzhou Wuhan Nanjing Chongqing Tianjin Suzhou Changsha "
               "Zhengzhou Dongguan Qingdao Shenyang Ningbo Kunming Hefei Foshan Dalian Xiamen Fuzhou Jinan Harbin "
               "Changchun Wuxi Nanning Guiyang Taiyuan".split())
DEVICES = ("ios", "android", "web")
CODE_NUMBERS = 13
CODES = tuple(f"{n:0{w}d}" for w in (1, 2, 3) for n in range(1, CODE_NUMBERS + 1))  # "7", "07", "007": 3 categories
CODE_WIDTH_EFFECT = (-0.6, 0.0, 0.6)  # logit offset of 1-, 2- and 3-digit codes
SCHEMA = pa.schema([("request_id", pa.string()), ("ts", pa.string()), ("domain", pa.string()),
                    ("user_id", pa.string()), ("item_id", pa.string()), ("item_code", pa.string()),
                    ("city", pa.string()), ("device", pa.string()), ("price", pa.float64()),
                    ("user_age", pa.int32()), ("clicked", pa.int32())])
LATENT = 8
SIGNAL = 0.6  # scale of the user-item affinity u' M_d v / sqrt(LATENT) in the logit
BIAS_SD = 0.35  # spread of user and item biases
ACTIVITY_SD, POPULARITY_SD = 1.3, 1.5  # log-normal user activity, item popularity: a head and a long tail
CHUNK_ROWS = 1 << 16  # rows drawn at once: bounds the working memory
ID_BLOCK = 1 << 16  # ids whose attributes come from one seeded stream
CALIBRATION_ROWS = 1 << 17
FIRST_DATE = date(2026, 11, 1)
NEW_USERS_PER_DAY, NEW_ITEMS_PER_DAY = 0.03, 0.06  # ids born each day >= 1, relative to day 0's population
NEW_USER_ROWS, NEW_ITEM_ROWS = 0.04, 0.07  # share of a day's rows drawn from that day's newborn ids
ITEM_DEATH = 0.04  # daily probability that an item stops appearing
HOME_BOOST = 4.0  # an item is this much more likely to be shown in its own domain
PREFERRED_DOMAIN = 0.6  # share of a user's rows in the user's preferred domain
HOUR_WEIGHT = np.array([3, 2, 1.5, 1, 1, 1.5, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 6, 7, 8, 9, 10, 10, 8, 5], float)
AUC_BINS, AUC_LOW, AUC_HIGH = 4096, -16.0, 12.0  # logit histogram of the streaming oracle AUC
_TAG_WORLD, _TAG_USERS, _TAG_ITEMS, _TAG_ITEM_DAY, _TAG_CALIB, _TAG_ROWS = range(101, 107)
_DOMAIN_CDF = np.cumsum([d.share for d in DOMAINS]) / sum(d.share for d in DOMAINS)


def _pick_domain(u: np.ndarray) -> np.ndarray:
    """Domain indices [n] ~ DOMAINS' shares, one per uniform in u [n]."""
    return np.searchsorted(_DOMAIN_CDF, u, side="right").clip(max=len(DOMAINS) - 1)


@dataclass
class World:
    """Everything of a seed that is not per id; per-id attributes come from `_users` / `_items`."""

    seed: int
    M: np.ndarray  # [D, LATENT, LATENT] domain preference transforms
    code_proto: np.ndarray  # [LATENT, len(CODES)] category prototypes in latent space
    code_prior: np.ndarray  # [len(CODES)] log prior of an item's category
    code_effect: np.ndarray  # [len(CODES)] logit effect
    code_log_price: np.ndarray  # [len(CODES)] mean log price (price in currency units)
    price_slope: np.ndarray  # [D] logit per standardised log price
    device_effect: np.ndarray  # [D, 3]
    hour_effect: np.ndarray  # [D, 24]
    age_slope: np.ndarray  # [D] logit per 12 years above 35
    city_p: np.ndarray  # [len(CITIES)] home city distribution
    city_effect: np.ndarray  # [len(CITIES)]


def build_world(seed: int) -> World:
    """The seed's domains and categories: identical for every day and every `rows`."""
    rng = np.random.default_rng([seed, _TAG_WORLD])
    n_dom, n_codes = len(DOMAINS), len(CODES)
    shared = rng.standard_normal((LATENT, LATENT)) / math.sqrt(LATENT)
    M = np.stack([np.eye(LATENT) + 0.5 * shared + 0.7 * rng.standard_normal((LATENT, LATENT)) / math.sqrt(LATENT)
                  for _ in range(n_dom)]).astype(np.float32)
    city_w = 1.0 / np.arange(1, len(CITIES) + 1) ** 0.8
    return World(
        seed=seed, M=M, code_proto=rng.standard_normal((LATENT, n_codes)).astype(np.float32),
        code_prior=0.7 * rng.standard_normal(n_codes),
        code_effect=np.repeat(CODE_WIDTH_EFFECT, CODE_NUMBERS) + 0.2 * rng.standard_normal(n_codes),
        code_log_price=rng.normal(3.0, 0.8, n_codes), price_slope=rng.normal(-0.2, 0.15, n_dom),
        device_effect=0.2 * rng.standard_normal((n_dom, len(DEVICES))),
        hour_effect=0.15 * rng.standard_normal((n_dom, 24)), age_slope=0.3 * rng.standard_normal(n_dom),
        city_p=city_w / city_w.sum(), city_effect=0.1 * rng.standard_normal(len(CITIES)))


def _blocks(n: int, draw, *key: int) -> dict[str, np.ndarray]:
    """Attributes of ids [0, n): `draw(rng)` gives ID_BLOCK ids' worth from stream (*key, block)."""
    parts = [draw(np.random.default_rng([*key, b])) for b in range(-(-n // ID_BLOCK))]
    return {name: np.concatenate([p[name] for p in parts])[:n] for name in parts[0]} if parts else {}


def _users(world: World, n: int) -> dict[str, np.ndarray]:
    """Users 0..n-1: p [n, LATENT], bias, activity, domain, city, device, age [n] (age -1 = missing)."""
    def draw(rng: np.random.Generator) -> dict[str, np.ndarray]:
        p = rng.standard_normal((ID_BLOCK, LATENT)).astype(np.float32)
        age = np.clip(np.rint(35 + 12 * (0.6 * p[:, 0] + 0.8 * rng.standard_normal(ID_BLOCK))), 16, 75)
        return {"p": p, "bias": BIAS_SD * rng.standard_normal(ID_BLOCK),
                "activity": np.exp(ACTIVITY_SD * rng.standard_normal(ID_BLOCK)),
                "domain": _pick_domain(rng.random(ID_BLOCK)),
                "city": rng.choice(len(CITIES), ID_BLOCK, p=world.city_p),
                "device": rng.choice(len(DEVICES), ID_BLOCK, p=[0.35, 0.5, 0.15]),
                "age": np.where(rng.random(ID_BLOCK) < 0.1, -1, age).astype(np.int32)}

    return _blocks(n, draw, world.seed, _TAG_USERS)


def _items(world: World, n: int) -> dict[str, np.ndarray]:
    """Items 0..n-1: q [n, LATENT], bias, popularity, trend (per day), life (days), domain, code,
    log_price (nan = missing) [n]."""
    def draw(rng: np.random.Generator) -> dict[str, np.ndarray]:
        q = rng.standard_normal((ID_BLOCK, LATENT)).astype(np.float32)
        pop = np.exp(POPULARITY_SD * rng.standard_normal(ID_BLOCK))
        code = np.argmax(q @ world.code_proto + world.code_prior, axis=1)
        prior = np.exp(world.code_prior) / np.exp(world.code_prior).sum()
        code = np.where(rng.random(ID_BLOCK) < 0.2, rng.choice(len(CODES), ID_BLOCK, p=prior), code)
        log_price = world.code_log_price[code] + 0.6 * rng.standard_normal(ID_BLOCK)
        return {"q": q, "bias": BIAS_SD * rng.standard_normal(ID_BLOCK) + 0.1 * np.log(pop), "pop": pop,
                "trend": rng.normal(-0.01, 0.04, ID_BLOCK), "life": rng.geometric(ITEM_DEATH, ID_BLOCK),
                "domain": _pick_domain(rng.random(ID_BLOCK)), "code": code,
                "log_price": np.where(rng.random(ID_BLOCK) < 0.05, np.nan, log_price)}

    return _blocks(n, draw, world.seed, _TAG_ITEMS)


def _born(n: int, n0: int, per_day: int) -> np.ndarray:
    """Birth day of ids 0..n-1: day 0 for the first n0, then per_day new ids a day."""
    k = np.arange(n)
    return np.where(k < n0, 0, 1 + (k - n0) // per_day)


def _sample(sampler: tuple[np.ndarray, np.ndarray], u: np.ndarray) -> np.ndarray:
    """Ids drawn with probability ~ weight, one per uniform in u [n]."""
    ids, cdf = sampler
    if len(ids) == 0:
        return np.zeros(len(u), dtype=np.int64)
    return ids[np.searchsorted(cdf, u * cdf[-1], side="right").clip(max=len(ids) - 1)]


@dataclass
class Day:
    """One day's population and samplers; `intercept` [D] is set by `calibrate`."""

    index: int
    users: dict[str, np.ndarray]
    items: dict[str, np.ndarray]
    user_born: np.ndarray  # [n_users] birth day
    item_born: np.ndarray  # [n_items]
    user_pool: tuple  # (ids, cumulative weights) of earlier-born users
    user_new: tuple  # users born today (empty on day 0)
    item_pool: list  # [D] alive earlier-born items, weighted for domain d
    item_new: list  # [D] items born today
    intercept: np.ndarray


def build_day(world: World, rows: int, day: int) -> Day:
    """Population (sized from `rows`), births, deaths and popularity of `day`."""
    n_users0, n_items0 = max(500, rows // 5), max(300, rows // 10)
    per_user, per_item = max(1, round(NEW_USERS_PER_DAY * n_users0)), max(1, round(NEW_ITEMS_PER_DAY * n_items0))
    users, items = _users(world, n_users0 + day * per_user), _items(world, n_items0 + day * per_item)
    user_born = _born(len(users["bias"]), n_users0, per_user)
    item_born = _born(len(items["bias"]), n_items0, per_item)
    today = (user_born == day) & (day > 0)
    user_ids = np.arange(len(user_born))
    user_pool, user_new = ((user_ids[m], np.cumsum(users["activity"][m])) for m in (~today, today))
    jitter = _blocks(len(item_born), lambda r: {"z": r.standard_normal(ID_BLOCK)}, world.seed, _TAG_ITEM_DAY, day)
    weight = items["pop"] * np.exp(items["trend"] * (day - item_born) + 0.3 * jitter.get("z", 0.0))
    alive = item_born + items["life"] > day
    new, item_ids = (item_born == day) & (day > 0), np.arange(len(item_born))
    boosted = [weight * np.where(items["domain"] == d, HOME_BOOST, 1.0) for d in range(len(DOMAINS))]
    pools, news = ([(item_ids[m], np.cumsum(w[m])) for w in boosted] for m in (alive & ~new, new))
    return Day(day, users, items, user_born, item_born, user_pool, user_new, pools, news, np.zeros(len(DOMAINS)))


def _seconds(q: np.ndarray) -> np.ndarray:
    """Positions in the day q in [0, 1) [n] -> seconds after midnight [n], following HOUR_WEIGHT."""
    cum = np.concatenate([[0.0], np.cumsum(HOUR_WEIGHT)]) / HOUR_WEIGHT.sum()
    hour = np.searchsorted(cum, q, side="right").clip(1, 24) - 1
    frac = (q - cum[hour]) / (cum[hour + 1] - cum[hour])
    return np.minimum(3600 * (hour + frac), 86399).astype(np.int64)


def _draw_rows(world: World, day: Day, q: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Rows at day positions q [n]: ids, side columns and `logit` (without the intercept) [n]."""
    n = len(q)
    new_user = rng.random(n) < (NEW_USER_ROWS if len(day.user_new[0]) else 0.0)
    users = np.where(new_user, _sample(day.user_new, rng.random(n)), _sample(day.user_pool, rng.random(n)))
    U, I = day.users, day.items
    dom = np.where(rng.random(n) < PREFERRED_DOMAIN, U["domain"][users], _pick_domain(rng.random(n)))
    new_item = rng.random(n) < NEW_ITEM_ROWS
    u_item, items, affinity = rng.random(n), np.zeros(n, np.int64), np.zeros(n)
    for d in range(len(DOMAINS)):
        sel = dom == d
        fresh = new_item[sel] & (len(day.item_new[d][0]) > 0)
        items[sel] = np.where(fresh, _sample(day.item_new[d], u_item[sel]), _sample(day.item_pool[d], u_item[sel]))
        affinity[sel] = np.einsum("bi,ij,bj->b", U["p"][users[sel]], world.M[d], I["q"][items[sel]])
    secs = _seconds(q)
    device = np.where(rng.random(n) < 0.85, U["device"][users], rng.integers(0, len(DEVICES), n))
    city = np.where(rng.random(n) < 0.9, U["city"][users], rng.choice(len(CITIES), n, p=world.city_p))
    city = np.where(rng.random(n) < 0.04, -1, city)
    code, age = I["code"][items], U["age"][users]
    log_price = I["log_price"][items] + 0.1 * rng.standard_normal(n)
    log_price[rng.random(n) < 0.01] = np.nan
    z_price = np.nan_to_num((log_price - 3.0) / 0.9)
    logit = (SIGNAL * affinity / math.sqrt(LATENT) + U["bias"][users] + I["bias"][items] + world.code_effect[code]
             + world.price_slope[dom] * z_price + world.device_effect[dom, device]
             + world.hour_effect[dom, secs // 3600] + np.where(age < 0, 0.0, world.age_slope[dom] * (age - 35) / 12)
             + np.where(city < 0, 0.0, world.city_effect[city]))
    return {"domain": dom, "user": users, "item": items, "seconds": secs, "device": device, "city": city,
            "code": code, "age": age, "price": np.round(np.exp(log_price), 2), "logit": logit}


def calibrate(world: World, day: Day) -> None:
    """Set day.intercept [D] so that each domain's mean click probability on a CALIBRATION_ROWS
    sample of the day is its target CTR (bisection on the logit offset)."""
    rng = np.random.default_rng([world.seed, _TAG_CALIB, day.index])
    rows = _draw_rows(world, day, np.sort(rng.random(CALIBRATION_ROWS)), rng)
    for d, dom in enumerate(DOMAINS):
        logit = rows["logit"][rows["domain"] == d]
        lo, hi = -30.0, 30.0
        for _ in range(50):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if (1 / (1 + np.exp(-(logit + mid)))).mean() < dom.ctr else (lo, mid)
        day.intercept[d] = (lo + hi) / 2


def _clock(prefix: str, secs: np.ndarray) -> pa.Array:
    """`prefix` ("2026-11-01 ") + "HH:MM:SS" for seconds after midnight [n], as a string array."""
    head = np.frombuffer(prefix.encode(), np.uint8)
    buf = np.full((len(secs), len(head) + 8), ord(":"), np.uint8)
    buf[:, :len(head)] = head
    for at, value in zip(range(len(head), len(head) + 8, 3), (secs // 3600, secs // 60 % 60, secs % 60)):
        buf[:, at], buf[:, at + 1] = 48 + value // 10, 48 + value % 10
    return pa.array(buf.view(f"S{buf.shape[1]}").ravel()).cast(pa.string())


def _table(day: Day, start: int, rows: dict[str, np.ndarray], clicked: np.ndarray) -> pa.Table:
    """One chunk's rows (from row `start` of the day) in SCHEMA's columns and types."""
    def names(values: tuple[str, ...], index: np.ndarray) -> pa.Array:  # a negative index is a null
        return pc.take(pa.array(values), pa.array(index, mask=index < 0))

    price, age = rows["price"], rows["age"]
    return pa.table({
        "request_id": pa.array([f"r{day.index}-{i:09d}" for i in range(start, start + len(clicked))]),
        "ts": _clock(f"{FIRST_DATE + timedelta(days=day.index)} ", rows["seconds"]),
        "domain": names(tuple(d.name for d in DOMAINS), rows["domain"]),
        "user_id": pa.array([f"u{k:07d}" for k in rows["user"].tolist()]),
        "item_id": pa.array([f"i{k:06d}" for k in rows["item"].tolist()]),
        "item_code": names(CODES, rows["code"]), "city": names(CITIES, rows["city"]),
        "device": names(DEVICES, rows["device"]), "price": pa.array(price, mask=np.isnan(price)),
        "user_age": pa.array(age.astype(np.int32), mask=age < 0), "clicked": pa.array(clicked.astype(np.int32)),
    }, schema=SCHEMA)


class _Stats:
    """A day's counts: positives / negatives per domain and oracle logit bin [D, AUC_BINS], ids seen."""

    def __init__(self, day: Day):
        self.day, shape = day, (len(DOMAINS), AUC_BINS)
        self.pos, self.neg = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        self.users, self.items = np.zeros(len(day.user_born), bool), np.zeros(len(day.item_born), bool)
        self.new_user_rows = self.new_item_rows = 0

    def add(self, rows: dict[str, np.ndarray], logit: np.ndarray, clicked: np.ndarray) -> None:
        b = ((logit - AUC_LOW) / (AUC_HIGH - AUC_LOW) * AUC_BINS).astype(np.int64).clip(0, AUC_BINS - 1)
        key = rows["domain"] * AUC_BINS + b
        self.pos += np.bincount(key[clicked], minlength=self.pos.size).reshape(self.pos.shape)
        self.neg += np.bincount(key[~clicked], minlength=self.neg.size).reshape(self.neg.shape)
        self.users[rows["user"]] = self.items[rows["item"]] = True
        self.new_user_rows += int((self.day.user_born[rows["user"]] > 0).sum())
        self.new_item_rows += int((self.day.item_born[rows["item"]] > 0).sum())

    def summary(self) -> dict:
        day, clicks, rows = self.day, self.pos.sum(1), self.pos.sum(1) + self.neg.sum(1)
        total, day0 = int(rows.sum()), day.item_born == 0
        domains = {dom.name: {"rows": int(rows[d]), "ctr": round(float(clicks[d] / max(1, rows[d])), 5),
                              "target_ctr": dom.ctr, "oracle_auc": _auc(self.pos[d], self.neg[d])}
                   for d, dom in enumerate(DOMAINS)}
        return {"day": day.index, "date": str(FIRST_DATE + timedelta(days=day.index)), "rows": total,
                "ctr": round(float(clicks.sum() / total), 5), "oracle_auc": _auc(self.pos.sum(0), self.neg.sum(0)),
                "domains": domains, "users": int(self.users.sum()), "items": int(self.items.sum()),
                "new_users": int(self.users[day.user_born > 0].sum()),
                "new_items": int(self.items[day.item_born > 0].sum()),
                "new_user_row_share": round(self.new_user_rows / total, 5),
                "new_item_row_share": round(self.new_item_rows / total, 5), "day0_items": int(day0.sum()),
                "day0_items_retired": int((day0 & (day.items["life"] <= day.index)).sum())}


def _auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """AUC from per-bin positive / negative counts [bins] (ties within a bin count one half)."""
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return None
    return round(float((pos * (np.cumsum(neg) - 0.5 * neg)).sum() / (n_pos * n_neg)), 4)


def _open_writer(stack: ExitStack, path: str, fmt: str):
    """A writer with .write_table(table), closed with `stack`: Parquet (zstd), or CSV with an unquoted
    header and cells (no value holds a comma, a quote or a newline)."""
    if fmt == "parquet":
        return stack.enter_context(pq.ParquetWriter(path, SCHEMA, compression="zstd"))
    f = stack.enter_context(open(path, "wb"))
    f.write((",".join(SCHEMA.names) + "\n").encode())
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    return stack.enter_context(pacsv.CSVWriter(f, SCHEMA, write_options=options))


def _check(out: str, day: int, rows: int, seed: int, overwrite: bool) -> str:
    """The output format ('csv' or 'parquet'); ConfigError / PathExistsError for what cannot be written."""
    fmt = {".csv": "csv", ".parquet": "parquet"}.get(os.path.splitext(out)[1].lower())
    for bad, message in ((fmt is None, f"--out {out!r}: the file name must end with .csv or .parquet"),
                         (rows < 1, f"--rows must be >= 1, got {rows}"), (day < 0, f"--day must be >= 0, got {day}"),
                         (seed < 0, f"--seed must be >= 0, got {seed}"),
                         (os.path.isdir(out), f"--out {out!r} is a directory; name a .csv or .parquet file")):
        if bad:
            raise ConfigError(message)
    if os.path.exists(out) and not overwrite:
        raise PathExistsError(f"{out} exists; pass --overwrite to replace it")
    return fmt


def generate_raw_logs(out: str, day: int, rows: int, seed: int = 0, overwrite: bool = False, log=print) -> dict:
    """Write day `day`'s `rows` impressions of world `seed` to the local file `out` (.csv or .parquet),
    atomically, and return a summary: rows, ctr, oracle_auc (AUC of the true click probability),
    per-domain rows / ctr / target_ctr / oracle_auc, distinct users / items, new_users / new_items
    (distinct ids born after day 0), their row shares, day-0 items retired by now, path, bytes, seconds.
    ConfigError for rows < 1, day < 0, seed < 0 or another extension; PathExistsError for an
    existing `out` without `overwrite`.
    """
    fmt = _check(out, day, rows, seed, overwrite)
    t0 = time.time()
    world = build_world(seed)
    state = build_day(world, rows, day)
    calibrate(world, state)
    log(f"[rawlogs] day {day} ({FIRST_DATE + timedelta(days=day)}), seed {seed}: {rows:,} rows from "
        f"{len(state.user_born):,} users and {len(state.item_born):,} items -> {out}")
    stats = _Stats(state)

    def write(tmp: str) -> None:
        with ExitStack() as stack:
            writer, next_report = _open_writer(stack, tmp, fmt), 0.1
            for chunk, start in enumerate(range(0, rows, CHUNK_ROWS)):
                rng = np.random.default_rng([seed, _TAG_ROWS, day, chunk])
                n = min(CHUNK_ROWS, rows - start)
                drawn = _draw_rows(world, state, (np.arange(start, start + n) + rng.random(n)) / rows, rng)
                logit = drawn["logit"] + state.intercept[drawn["domain"]]
                clicked = rng.random(n) < 1 / (1 + np.exp(-logit))
                writer.write_table(_table(state, start, drawn, clicked))
                stats.add(drawn, logit, clicked)
                if rows > 4 * CHUNK_ROWS and (start + n) / rows >= next_report:
                    next_report += 0.1
                    log(f"[rawlogs] {(start + n) / rows:4.0%} {start + n:,}/{rows:,} rows, "
                        f"{(start + n) / max(time.time() - t0, 1e-9):,.0f} rows/s")

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    atomic_write(out, write)
    summary = {**stats.summary(), "seed": seed, "path": out, "format": fmt, "bytes": os.path.getsize(out),
               "seconds": round(time.time() - t0, 2)}
    _log_summary(summary, log)
    return summary


def _log_summary(s: dict, log) -> None:
    log(f"[rawlogs] wrote {s['path']} ({s['bytes'] / 2**20:,.1f} MiB) in {s['seconds']:.1f}s: {s['rows']:,} rows, "
        f"CTR {s['ctr']:.2%}, oracle AUC {s['oracle_auc']}, {s['users']:,} users, {s['items']:,} items")
    for name, d in s["domains"].items():
        log(f"[rawlogs]   {name:<10} {d['rows']:>10,} rows  CTR {d['ctr']:6.2%} (target {d['target_ctr']:.0%})  "
            f"oracle AUC {d['oracle_auc']}")
    log(f"[rawlogs] born after day 0: {s['new_users']:,} users ({s['new_user_row_share']:.1%} of rows), "
        f"{s['new_items']:,} items ({s['new_item_row_share']:.1%} of rows); "
        f"{s['day0_items_retired']:,}/{s['day0_items']:,} day-0 items retired")

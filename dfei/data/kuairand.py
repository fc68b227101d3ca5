"""KuaiRand-1K (the paper's public dataset, Table 2) -> the data contract.

Official release files (github.com/chongminggao/KuaiRand, column names from its README):
  log_standard_4_08_to_4_21_1k.csv, log_standard_4_22_to_5_08_1k.csv   interactions
  user_features_1k.csv                                                 30 user features
  video_features_basic_1k.csv                                          11 basic video features
  video_features_statistic_1k.csv                                      51 statistic video features

As in the paper: domains are `tab` in {0, 1, 2, 4, 5, 6} (named B1..B6, domain ids = tab values),
label `is_click`, splits by date (train 04-08..04-18, valid 04-19..04-21, test 04-22..05-08). The
92 side features follow the authors' list (30 user + 11 basic + 51 statistic); `user_id` is also a
feature (the GAUC user column); `video_id` is not, as in the authors' data. Numeric features get
~10 quantile bins and categorical ones a vocabulary with an OOV id 0, all fitted on the train
split's impressions only. Statistic features are named stat_<column> (the statistic table reuses
some user-table names, e.g. follow_user_num). Feature tables are encoded once per user/video, weighted by train
impressions, then gathered per row, so the 4M-video tables are never joined raw onto 11M logs.
The encoders are dfei.data.convert's, fitted from (value, train impressions) pairs: the same
implementation (id order, min count, quantile rule) as the CSV/Parquet converter's on Ray Data.
This input has a fixed size (11M log rows), so it is read with pyarrow/pandas on the driver.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from dfei.data.convert import write_dataset
from dfei.data.encoders import Buckets, DomainMap, FeatureEncoder, FeatureTransform, LabelRule, Vocabulary
from dfei.data.encoders.text import kind_of
from dfei.data.spec import SPLITS, DatasetError, DatasetSpec, Domain, Feature

LOG_FILES = ("log_standard_4_08_to_4_21_1k.csv", "log_standard_4_22_to_5_08_1k.csv")
USER_FILE = "user_features_1k.csv"
VIDEO_BASIC_FILE = "video_features_basic_1k.csv"
VIDEO_STAT_FILE = "video_features_statistic_1k.csv"
TABS = (0, 1, 2, 4, 5, 6)
SPLIT_DATES = {"train": (20220408, 20220418), "valid": (20220419, 20220421), "test": (20220422, 20220508)}
LOG_COLUMNS = ("user_id", "video_id", "date", "is_click", "tab")

USER_CATEGORICAL = (["user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
                     "follow_user_num_range", "fans_user_num_range", "friend_user_num_range", "register_days_range"]
                    + [f"onehot_feat{i}" for i in range(18)])
USER_NUMERIC = ["follow_user_num", "fans_user_num", "friend_user_num", "register_days"]
VIDEO_CATEGORICAL = ["author_id", "video_type", "upload_type", "visible_status", "music_id", "music_type", "tag"]
VIDEO_NUMERIC = ["upload_dt", "video_duration", "server_width", "server_height"]
VIDEO_STATISTIC = [
    "counts", "show_cnt", "show_user_num", "play_cnt", "play_user_num", "play_duration", "complete_play_cnt",
    "complete_play_user_num", "valid_play_cnt", "valid_play_user_num", "long_time_play_cnt",
    "long_time_play_user_num", "short_time_play_cnt", "short_time_play_user_num", "play_progress",
    "comment_stay_duration", "like_cnt", "like_user_num", "click_like_cnt", "double_click_cnt", "cancel_like_cnt",
    "cancel_like_user_num", "comment_cnt", "comment_user_num", "direct_comment_cnt", "reply_comment_cnt",
    "delete_comment_cnt", "delete_comment_user_num", "comment_like_cnt", "comment_like_user_num", "follow_cnt",
    "follow_user_num", "cancel_follow_cnt", "cancel_follow_user_num", "share_cnt", "share_user_num", "download_cnt",
    "download_user_num", "report_cnt", "report_user_num", "reduce_similar_cnt", "reduce_similar_user_num",
    "collect_cnt", "collect_user_num", "cancel_collect_cnt", "cancel_collect_user_num", "direct_comment_user_num",
    "reply_comment_user_num", "share_all_cnt", "share_all_user_num", "outsite_share_all_cnt"]


def _read(raw: str, name: str, columns: list[str], filter_ids: np.ndarray | None = None,
          key: str | None = None) -> pd.DataFrame:
    """Read the named columns of an official file, streaming; keep rows whose `key` is in filter_ids."""
    path = os.path.join(raw, name)
    if not os.path.exists(path):
        raise DatasetError(f"{path}: missing (expected the official KuaiRand-1K release files in {raw})")
    try:
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 26),
                                convert_options=pacsv.ConvertOptions(include_columns=columns))
        keep = pa.array(filter_ids) if filter_ids is not None else None
        parts = []
        for batch in reader:
            if keep is not None:
                batch = batch.filter(pa.compute.is_in(batch.column(key), value_set=keep))
            parts.append(batch)
        table = pa.Table.from_batches(parts, schema=reader.schema)
    except (pa.ArrowInvalid, KeyError) as err:
        raise DatasetError(f"{path}: cannot read columns {columns}: {err}") from None
    return table.to_pandas()


def _encode_table(table: pd.DataFrame, index: np.ndarray, train_rows: np.ndarray, categorical: list[str],
                  numeric: list[str], min_count: int) -> tuple[dict[str, np.ndarray], list[FeatureEncoder]]:
    """Encode an entity table (users or videos) with encoders fitted on the train impressions;
    return per-log-row codes (rows whose entity is missing from the table get 0) and the encoders."""
    weights = np.bincount(index[train_rows & (index >= 0)], minlength=len(table)).astype(np.float64)
    codes, features = {}, []
    for col in categorical + numeric:
        values = table[col]
        enc = Vocabulary.fit(values, min_count, weights) if col in categorical else Buckets.fit(values, 10, weights)
        entity_codes = np.append(enc.encode(values), np.int32(0))  # slot -1 = missing entity
        codes[col] = entity_codes[index]
        features.append(FeatureEncoder(col, enc, kind_of(pa.array(values, from_pandas=True).type)))
    return codes, features


def convert_kuairand(raw: str, out: str, min_count: int = 1, overwrite: bool = False, log=print) -> DatasetSpec:
    logs = pd.concat([_read(raw, f, list(LOG_COLUMNS)) for f in LOG_FILES], ignore_index=True)
    logs = logs[logs["tab"].isin(TABS)].reset_index(drop=True)
    bad = sorted(set(logs["is_click"].unique()) - {0, 1})
    if bad:
        raise DatasetError(f"{os.path.join(raw, LOG_FILES[0])}: is_click has value(s) {bad[:5]}, expected 0/1")
    which = np.full(len(logs), "", dtype=object)
    for split, (lo, hi) in SPLIT_DATES.items():
        which[(logs["date"] >= lo).to_numpy() & (logs["date"] <= hi).to_numpy()] = split
    logs, which = logs[which != ""].reset_index(drop=True), which[which != ""]
    train = which == "train"
    log(f"[kuairand] {len(logs):,} interactions in tabs {TABS}: "
        + ", ".join(f"{s} {(which == s).sum():,}" for s in SPLITS))

    users = _read(raw, USER_FILE, ["user_id"] + USER_CATEGORICAL + USER_NUMERIC)
    video_ids = logs["video_id"].unique()
    basic = _read(raw, VIDEO_BASIC_FILE, ["video_id"] + VIDEO_CATEGORICAL + VIDEO_NUMERIC, video_ids, "video_id")
    basic["upload_dt"] = pd.to_datetime(basic["upload_dt"], errors="coerce").map(
        lambda t: t.toordinal() if pd.notna(t) else np.nan)
    basic["tag"] = basic["tag"].astype(str).str.split(",").str[0]  # the first (main) category
    stats = _read(raw, VIDEO_STAT_FILE, ["video_id"] + VIDEO_STATISTIC, video_ids, "video_id")
    # the statistic table reuses user-table names (follow_user_num): its features are stat_<name>
    stats = stats.rename(columns={c: f"stat_{c}" for c in VIDEO_STATISTIC})
    log(f"[kuairand] side tables: {len(users):,} users, {len(basic):,} videos (basic), {len(stats):,} (statistic)")

    user_index = pd.Index(users["user_id"]).get_indexer(logs["user_id"])
    uid = Vocabulary.fit(logs["user_id"][train])
    columns = {"user_id": uid.encode(pa.array(logs["user_id"]))}
    features = [FeatureEncoder("user_id", uid, kind_of(pa.array(logs["user_id"]).type))]
    for table, index, cat, num in (
            (users, user_index, USER_CATEGORICAL, USER_NUMERIC),
            (basic, pd.Index(basic["video_id"]).get_indexer(logs["video_id"]), VIDEO_CATEGORICAL, VIDEO_NUMERIC),
            (stats, pd.Index(stats["video_id"]).get_indexer(logs["video_id"]), [],
             [f"stat_{c}" for c in VIDEO_STATISTIC])):
        codes, feats = _encode_table(table, index, train, cat, num, min_count)
        columns.update(codes)
        features += feats
    domain_list = [Domain(tab, f"B{i + 1}") for i, tab in enumerate(TABS)]
    # the transform of a log row joined to its user's and video's features (after the `tag` and
    # `upload_dt` preparation above): what scoring such rows would apply
    transform = FeatureTransform(features, DomainMap("tab", {str(t): t for t in TABS}, "integer"),
                                 LabelRule("is_click"))
    tabs = logs["tab"].to_numpy()
    labels = logs["is_click"].to_numpy()
    return write_dataset(
        out, "kuairand-1k", {s: {c: v[which == s] for c, v in columns.items()} for s in SPLITS},
        {s: labels[which == s] for s in SPLITS}, {s: tabs[which == s] for s in SPLITS}, domain_list,
        [Feature(f.name, f.cardinality) for f in features],
        "user_id", meta={"converter": "kuairand", "raw": os.path.abspath(raw), "tabs": list(TABS),
                         "split_dates": SPLIT_DATES, "min_count": min_count},
        overwrite=overwrite, log=log, transform=transform)

"""A tiny stand-in for the official KuaiRand-1K files: same file names, columns and dtypes."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from dfei.data.kuairand import USER_CATEGORICAL, USER_NUMERIC, VIDEO_STATISTIC

LOG_HEADER = ["user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like", "is_follow", "is_comment",
              "is_forward", "is_hate", "long_view", "play_time_ms", "duration_ms", "profile_stay_time",
              "comment_stay_time", "is_profile_enter", "is_rand", "tab"]


def write_fixture(root: str, n_users: int = 40, n_videos: int = 300, rows_per_day: int = 150, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    days = pd.date_range("2022-04-08", "2022-05-08")
    logs = []
    for day in days:
        n = rows_per_day
        user = rng.integers(0, n_users, n)
        video = rng.integers(0, n_videos, n)
        tab = rng.choice([0, 1, 2, 3, 4, 5, 6, 7], n, p=[0.3, 0.3, 0.1, 0.05, 0.1, 0.05, 0.05, 0.05])
        click = (rng.random(n) < 0.2 + 0.5 * (video % 3 == 0)).astype(np.int64)  # learnable: video-driven
        logs.append(pd.DataFrame({
            "user_id": user, "video_id": video, "date": int(day.strftime("%Y%m%d")), "hourmin": rng.integers(0, 2400, n),
            "time_ms": 1649376000000 + rng.integers(0, 86_400_000, n), "is_click": click,
            **{c: rng.integers(0, 2, n) for c in LOG_HEADER[6:12]}, "play_time_ms": rng.integers(0, 10**5, n),
            "duration_ms": rng.integers(10**3, 10**5, n), "profile_stay_time": 0, "comment_stay_time": 0,
            "is_profile_enter": 0, "is_rand": 0, "tab": tab})[LOG_HEADER])
    logs = pd.concat(logs, ignore_index=True)
    early = logs["date"] <= 20220421
    logs[early].to_csv(os.path.join(root, "log_standard_4_08_to_4_21_1k.csv"), index=False)
    logs[~early].to_csv(os.path.join(root, "log_standard_4_22_to_5_08_1k.csv"), index=False)

    users = pd.DataFrame({"user_id": np.arange(n_users)})
    users["user_active_degree"] = rng.choice(["high_active", "full_active", "middle_active", "UNKNOWN"], n_users)
    for c in USER_CATEGORICAL[1:4]:
        users[c] = rng.integers(0, 2, n_users)
    users["follow_user_num_range"] = rng.choice(["0", "(0,10]", "(10,50]", "500+"], n_users)
    users["fans_user_num_range"] = rng.choice(["0", "[1,10)", "[10,100)"], n_users)
    users["friend_user_num_range"] = rng.choice(["0", "[1,5)", "[5,30)"], n_users)
    users["register_days_range"] = rng.choice(["15-30", "31-60", "730+"], n_users)
    for c in USER_NUMERIC:
        users[c] = rng.integers(0, 1000, n_users)
    for i in range(18):
        users[f"onehot_feat{i}"] = rng.integers(0, 5, n_users)
    columns = ["user_id", "user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
               "follow_user_num", "follow_user_num_range", "fans_user_num", "fans_user_num_range", "friend_user_num",
               "friend_user_num_range", "register_days", "register_days_range"] + [f"onehot_feat{i}" for i in range(18)]
    users[columns].to_csv(os.path.join(root, "user_features_1k.csv"), index=False)

    vids = np.arange(n_videos - 5)  # the last 5 videos have no side features (-> OOV codes)
    basic = pd.DataFrame({
        "video_id": vids, "author_id": rng.integers(0, 50, len(vids)), "video_type": rng.choice(["NORMAL", "AD"], len(vids)),
        "upload_dt": pd.Series(pd.date_range("2020-01-01", periods=len(vids), freq="D").strftime("%Y-%m-%d")),
        "upload_type": rng.choice(["ShortImport", "LongImport"], len(vids)), "visible_status": rng.integers(0, 2, len(vids)),
        "video_duration": rng.integers(1000, 100000, len(vids)).astype(float), "server_width": 720,
        "server_height": 1280, "music_id": rng.integers(0, 30, len(vids)), "music_type": rng.integers(0, 9, len(vids)),
        "tag": [f"{a},{b}" for a, b in zip(vids % 3, rng.integers(0, 60, len(vids)))]})
    basic.to_csv(os.path.join(root, "video_features_basic_1k.csv"), index=False)
    stats = pd.DataFrame({"video_id": vids, "counts": rng.integers(1, 60, len(vids))})
    for c in VIDEO_STATISTIC[1:]:
        stats[c] = rng.random(len(vids)) * 100
    stats.to_csv(os.path.join(root, "video_features_statistic_1k.csv"), index=False)

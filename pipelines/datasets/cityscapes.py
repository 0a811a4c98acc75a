"""Cityscapes (paper.md, section 4.2; [P] Table 5): gtFine labelIds mapped to the 19 trainIds.

The site needs a login. `fetch` reads the credentials from the environment variables
CITYSCAPES_USERNAME and CITYSCAPES_PASSWORD (never logged, never stored), logs in through the site's
form as cityscapesScripts' `csDownload` does, and downloads `file-handling/?packageID=N`. Archives
placed by hand in `data/raw/cityscapes/` (or given through `--mirror`) need no login.
Splits: train 2,975 / val 500 (the test labels are not public).
"""

from __future__ import annotations

import http.cookiejar
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipelines.datasets.download import USER_AGENT, Archive
from pipelines.datasets.errors import CorruptArchiveError, CredentialsError, DownloadError
from pipelines.datasets.layout import IGNORE_INDEX, LayoutWriter, read_label
from pipelines.datasets.registry import DatasetSpec, register_dataset

ENV_USERNAME = "CITYSCAPES_USERNAME"
ENV_PASSWORD = "CITYSCAPES_PASSWORD"
SITE = "https://www.cityscapes-dataset.com"
LOGIN_URL = f"{SITE}/login/"

GTFINE = Archive(
    filename="gtFine_trainvaltest.zip",
    url=f"{SITE}/file-handling/?packageID=1",
    checksum="sha1:99f532cb1af174f5fcc4c5bc8feea8c66246ddbc",  # gluon-cv scripts/datasets/cityscapes.py
)
LEFTIMG8BIT = Archive(
    filename="leftImg8bit_trainvaltest.zip",
    url=f"{SITE}/file-handling/?packageID=3",
    checksum="sha1:2c0b77ce9933cc635adda307fbba5566f5d9d404",  # gluon-cv scripts/datasets/cityscapes.py
)
EXPECTED_SPLITS = {"train": 2975, "val": 500}

# (labelId, name, colour) of the 19 evaluated classes, in trainId order
# (cityscapesScripts helpers/labels.py); every other labelId becomes ignore.
TRAIN_CLASSES = (
    (7, "road", (128, 64, 128)),
    (8, "sidewalk", (244, 35, 232)),
    (11, "building", (70, 70, 70)),
    (12, "wall", (102, 102, 156)),
    (13, "fence", (190, 153, 153)),
    (17, "pole", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)),
    (20, "traffic sign", (220, 220, 0)),
    (21, "vegetation", (107, 142, 35)),
    (22, "terrain", (152, 251, 152)),
    (23, "sky", (70, 130, 180)),
    (24, "person", (220, 20, 60)),
    (25, "rider", (255, 0, 0)),
    (26, "car", (0, 0, 142)),
    (27, "truck", (0, 0, 70)),
    (28, "bus", (0, 60, 100)),
    (31, "train", (0, 80, 100)),
    (32, "motorcycle", (0, 0, 230)),
    (33, "bicycle", (119, 11, 32)),
)
CLASSES = tuple(name for _, name, _ in TRAIN_CLASSES)
PALETTE = tuple(colour for _, _, colour in TRAIN_CLASSES)
LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _train_id, (_label_id, _, _) in enumerate(TRAIN_CLASSES):
    LUT[_label_id] = _train_id

HOW_TO_GET = (
    f"Cityscapes needs a login. Either (a) register at {SITE}/register/ and set the environment variables "
    f"{ENV_USERNAME} and {ENV_PASSWORD} before `python -m pipelines.fetch cityscapes`, or (b) download "
    f"{GTFINE.filename} (packageID=1) and {LEFTIMG8BIT.filename} (packageID=3) from {SITE}/downloads/ and "
    "place them in data/raw/cityscapes/ (the folder under --raw-root), or (c) pass --mirror with a folder "
    "or URL that holds both files"
)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report redirects instead of following them: a 302 after the login form means success."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def login() -> urllib.request.OpenerDirector:
    """A URL opener holding a logged-in Cityscapes session (credentials from the environment)."""
    username, password = os.environ.get(ENV_USERNAME, ""), os.environ.get(ENV_PASSWORD, "")
    if not username or not password:
        raise CredentialsError(HOW_TO_GET)
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect()
    )
    headers = {"User-Agent": USER_AGENT}
    form = urllib.parse.urlencode({"username": username, "password": password, "submit": "Login"}).encode()
    try:
        try:  # the login page sets the session cookie
            opener.open(urllib.request.Request(LOGIN_URL, headers=headers), timeout=60).close()
        except urllib.error.HTTPError as e:
            if e.code >= 400:
                raise
        try:
            with opener.open(urllib.request.Request(LOGIN_URL, data=form, headers=headers), timeout=60) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
    except urllib.error.URLError as e:  # no credentials in the message: only the reason
        raise DownloadError(
            f"cannot reach {LOGIN_URL} ({e.reason}); check the network. {HOW_TO_GET}"
        ) from None
    if status != 302:
        raise CredentialsError(
            f"the Cityscapes login at {LOGIN_URL} rejected the credentials in {ENV_USERNAME}/{ENV_PASSWORD} "
            f"(HTTP {status}, expected a redirect); check them by logging in on the site. {HOW_TO_GET}"
        )
    return opener


def convert(inputs: Mapping[str, Path], writer: LayoutWriter) -> None:
    """Convert gtFine/{train,val}/<city>/*_gtFine_labelIds.png + leftImg8bit/{train,val}/<city>/*.png."""
    labels_root = inputs[GTFINE.filename] / "gtFine"
    images_root = inputs[LEFTIMG8BIT.filename] / "leftImg8bit"
    for root, archive, folder in ((labels_root, GTFINE, "gtFine"), (images_root, LEFTIMG8BIT, "leftImg8bit")):
        if not root.is_dir():
            raise CorruptArchiveError(f"{archive.filename} has no {folder}/ folder; is it the right archive?")
    for split in ("train", "val"):
        for label_path in sorted((labels_root / split).glob("*/*_gtFine_labelIds.png")):
            image_id = label_path.name.removesuffix("_gtFine_labelIds.png")
            image = images_root / split / label_path.parent.name / f"{image_id}_leftImg8bit.png"
            if not image.is_file():
                raise CorruptArchiveError(f"cityscapes: label {label_path.name} has no image {image.name}")
            writer.add(split, image_id, image=image, label=LUT[read_label(label_path)])


SPEC = register_dataset(
    DatasetSpec(
        name="cityscapes",
        classes=CLASSES,
        palette=PALETTE,
        convert=convert,
        converter_version=1,
        archives=(GTFINE, LEFTIMG8BIT),
        login=login,
        expected_splits=EXPECTED_SPLITS,
    )
)

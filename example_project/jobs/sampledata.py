"""Demo users and sample files, created on first run (and left alone after that)."""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model


@dataclass(frozen=True)
class DemoUser:
    """A demo account: its username is also its password."""

    username: str
    email: str
    staff: bool = False

    @property
    def password(self) -> str:
        """The password (the username: these accounts exist for the demo only)."""
        return self.username


DEMO_USERS = (
    DemoUser("admin", "admin@example.test", staff=True),
    DemoUser("alice", "alice@example.test"),
    DemoUser("bob", "bob@example.test"),
    # Mail to carol fails once, as if the SMTP server dropped the connection (jobs.mail).
    DemoUser("carol", "carol+flaky@example.test"),
)


def ensure_users() -> dict[str, int]:
    """Create the demo users that are missing; return their ids by username."""
    model = get_user_model()
    ids = {}
    for demo in DEMO_USERS:
        user = model.objects.filter(username=demo.username).first()
        if user is None:
            if demo.staff:
                user = model.objects.create_superuser(demo.username, demo.email, demo.password)
            else:
                user = model.objects.create_user(demo.username, demo.email, demo.password)
        ids[demo.username] = user.pk
    return ids


# Original texts for the document tasks: enough sentences for a summary to choose from.
DOCUMENTS = {
    "queues.txt": """Why background queues matter

A web request should answer in a fraction of a second. Work that takes longer, such as
resizing a photograph, rendering a report or talking to a slow mail server, belongs in a
background queue. The request records what has to be done and returns at once; a worker
process picks the job up and does it.

Queues also absorb bursts. When a thousand users upload images in the same minute, the
queue grows and the workers drain it at their own pace, instead of the web servers
running out of memory. A queue with several priorities lets urgent mail overtake a
nightly report.

The price is visibility. Once a job leaves the request, nobody watches it by default.
A tracking table that records when each job was queued, started, retried and finished
turns the queue from a black box into something support staff can answer questions
about. Progress reports let a user see that a long job is moving. Cancellation lets
them stop a job that is no longer wanted.
""",
    "bread.txt": """Notes on baking bread

Flour, water, salt and yeast are all a loaf needs. Time does most of the work: a long,
cool fermentation develops flavour that no additive can imitate. The dough should be
wet enough to stick to a finger but strong enough to hold its shape after folding.

Folding the dough every half hour during the first two hours builds strength without
kneading. After shaping, a night in the refrigerator slows the yeast and lets the
bacteria add sourness. Baking in a covered pot traps steam, which keeps the crust soft
long enough for the loaf to rise fully.

A good crust crackles as it cools. Cutting the bread while it is hot lets the steam
escape and leaves the crumb gummy, so patience matters at the end as much as at the
start. Bakers who keep notes on flour, water temperature and timing improve fastest.
""",
    "gardens.txt": """A small vegetable garden

Start smaller than you think. Four raised beds, each a metre wide, can feed a family
through the summer and are small enough to weed in an evening. Beds that narrow are
reachable from both sides, so the soil is never trodden down.

Plant what you like to eat and what is expensive to buy. Herbs, salad leaves and
tomatoes repay the effort many times over; potatoes and onions are cheap in the shops
and take a lot of room. Sow salad every two weeks so that the harvest never arrives all
at once.

Water deeply and rarely rather than a little every day: deep water sends roots down,
where the soil stays moist. A layer of compost on top of the beds each autumn feeds the
soil, keeps weeds down and saves most of the digging.
""",
}

IMAGES = ("sunrise.png", "harbour.png", "forest.png")
SALES_CSV = "sales.csv"
VIDEO = "video.bin"


def _make_image(path: Path, seed: int) -> None:
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    size = (2400, 1600)
    # Three gradients at different angles as the colour channels, then shapes on top.
    channels = [
        Image.linear_gradient("L").rotate(rng.randrange(360), expand=False).resize(size)
        for _ in range(3)
    ]
    image = Image.merge("RGB", channels)
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        radius = rng.randrange(40, 260)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(3))
    image.save(path)


def _make_sales(path: Path, rows: int = 5000) -> None:
    rng = random.Random(7)
    regions = ("north", "south", "east", "west")
    products = {"kettle": 39.5, "toaster": 29.0, "blender": 79.9, "grinder": 54.0}
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["date", "region", "product", "units", "unit_price"])
        for _ in range(rows):
            product = rng.choice(list(products))
            writer.writerow(
                [
                    f"2025-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
                    rng.choice(regions),
                    product,
                    rng.randrange(1, 20),
                    products[product],
                ]
            )


def _make_video(path: Path, megabytes: int) -> None:
    # Random bytes, written in 1 MiB chunks to a temporary name: a run interrupted
    # halfway never leaves a short file behind that a later run would take as done.
    partial = path.with_suffix(".partial")
    with partial.open("wb") as handle:
        for _ in range(megabytes):
            handle.write(os.urandom(1 << 20))
    partial.replace(path)


def video_megabytes() -> int:
    """Size of the sample "video" in MiB: ``EXAMPLE_VIDEO_MB``, 50 by default."""
    return int(os.environ.get("EXAMPLE_VIDEO_MB", "50"))


def ensure_samples() -> dict[str, list[Path]]:
    """Create the sample files that are missing; return every sample's path, by kind."""
    folder = Path(settings.SAMPLES_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    images = [folder / name for name in IMAGES]
    for seed, path in enumerate(images):
        if not path.exists():
            _make_image(path, seed)
    documents = [folder / name for name in DOCUMENTS]
    for path in documents:
        if not path.exists():
            path.write_text(DOCUMENTS[path.name], encoding="utf-8")
    sales = folder / SALES_CSV
    if not sales.exists():
        _make_sales(sales)
    video = folder / VIDEO
    if not video.exists() or video.stat().st_size != video_megabytes() << 20:
        _make_video(video, video_megabytes())
    return {"image": images, "document": documents, "report": [sales], "video": [video]}

"""Bundled example inputs for the "🎲 Example" button: pictures drawn by code, so nothing is downloaded.

Each example is a prompt and one or more PNG images (a bar chart, a line chart, a shop receipt, a
scene with countable objects, a flow diagram, a clock face, and a pair of pictures to compare). The
drawing is deterministic: the same bytes on every call, so a battle started from an example stores
the same content-addressed images every time.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from decimal import Decimal
from functools import cache

from PIL import Image, ImageDraw, ImageFont

Color = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

INK: Color = (30, 30, 30)
GRID: Color = (215, 215, 215)
WHITE: Color = (255, 255, 255)

#: The scene with countable objects: circle colours and how many of each are drawn.
COUNT_COLORS: dict[str, Color] = {"red": (220, 40, 40), "blue": (40, 90, 220), "green": (40, 160, 70)}
COUNT_PER_COLOR: dict[str, int] = {"red": 3, "blue": 2, "green": 2}


@dataclass(frozen=True)
class Example:
    """One bundled example: a stable key (used as the battle's tag detail), a prompt and PNG images."""

    key: str
    prompt: str
    images: tuple[bytes, ...]


@cache
def font(size: int) -> Font:
    """Pillow's bundled default font at ``size`` pixels (a scalable font in Pillow ≥ 10.1)."""
    return ImageFont.load_default(size=size)


def png(img: Image.Image) -> bytes:
    """Encode an image as PNG without metadata, so the bytes depend only on the pixels."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def arrow(draw: ImageDraw.ImageDraw, points: list[tuple[int, int]], width: int = 3) -> None:
    """A polyline ending in a filled arrow head at its last point."""
    draw.line(points, fill=INK, width=width, joint="curve")
    (x0, y0), (x1, y1) = points[-2], points[-1]
    angle = math.atan2(y1 - y0, x1 - x0)
    head = [
        (x1, y1),
        (x1 - 14 * math.cos(angle - 0.45), y1 - 14 * math.sin(angle - 0.45)),
        (x1 - 14 * math.cos(angle + 0.45), y1 - 14 * math.sin(angle + 0.45)),
    ]
    draw.polygon(head, fill=INK)


def bar_chart() -> bytes:
    """Monthly sales as bars with a labelled value axis and the value printed on each bar."""
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun"]
    values = [42, 55, 38, 71, 64, 49]
    w, h = 680, 500
    left, right, top, bottom = 90, 640, 80, 420
    img = Image.new("RGB", (w, h), WHITE)
    draw = ImageDraw.Draw(img)
    draw.text((w // 2, 30), "Monthly sales, first half of 2024", font=font(26), fill=INK, anchor="mm")
    draw.text((left - 10, top - 28), "thousand EUR", font=font(18), fill=INK, anchor="lm")
    scale = (bottom - top) / 80
    for tick in range(0, 81, 20):
        y = round(bottom - tick * scale)
        draw.line([(left, y), (right, y)], fill=GRID, width=1)
        draw.text((left - 10, y), str(tick), font=font(18), fill=INK, anchor="rm")
    slot = (right - left) / len(months)
    for i, (month, value) in enumerate(zip(months, values, strict=True)):
        x0 = round(left + i * slot + slot * 0.2)
        x1 = round(left + (i + 1) * slot - slot * 0.2)
        y = round(bottom - value * scale)
        draw.rectangle([x0, y, x1, bottom], fill=(70, 120, 190))
        draw.text(((x0 + x1) // 2, y - 14), str(value), font=font(20), fill=INK, anchor="mm")
        draw.text(((x0 + x1) // 2, bottom + 20), month, font=font(20), fill=INK, anchor="mm")
    draw.line([(left, top - 10), (left, bottom), (right, bottom)], fill=INK, width=2)
    draw.text((w // 2, h - 30), "Month", font=font(20), fill=INK, anchor="mm")
    return png(img)


def line_chart() -> bytes:
    """Weekly active users over ten weeks: a rising trend with one dip, each point labelled."""
    values = [12, 15, 17, 21, 19, 24, 28, 31, 35, 40]
    w, h = 720, 500
    left, right, top, bottom = 90, 680, 80, 420
    img = Image.new("RGB", (w, h), WHITE)
    draw = ImageDraw.Draw(img)
    draw.text((w // 2, 30), "Weekly active users of a new app", font=font(26), fill=INK, anchor="mm")
    draw.text((left - 10, top - 28), "thousand users", font=font(18), fill=INK, anchor="lm")
    scale = (bottom - top) / 50
    for tick in range(0, 51, 10):
        y = round(bottom - tick * scale)
        draw.line([(left, y), (right, y)], fill=GRID, width=1)
        draw.text((left - 10, y), str(tick), font=font(18), fill=INK, anchor="rm")
    step = (right - left - 40) / (len(values) - 1)
    points = [(round(left + 20 + i * step), round(bottom - v * scale)) for i, v in enumerate(values)]
    draw.line(points, fill=(200, 80, 40), width=4, joint="curve")
    for week, ((x, y), value) in enumerate(zip(points, values, strict=True), start=1):
        draw.ellipse([x - 6, y - 6, x + 6, y + 6], fill=(200, 80, 40))
        draw.text((x, y - 20), str(value), font=font(18), fill=INK, anchor="mm")
        draw.text((x, bottom + 20), str(week), font=font(18), fill=INK, anchor="mm")
    draw.line([(left, top - 10), (left, bottom), (right, bottom)], fill=INK, width=2)
    draw.text((w // 2, h - 30), "Week", font=font(20), fill=INK, anchor="mm")
    return png(img)


def receipt() -> bytes:
    """A grocery receipt with items, quantities, prices, the total and the change."""
    items = [
        ("Apples 1.2 kg", Decimal("3.00")),
        ("Whole milk 1 L", Decimal("1.19")),
        ("Sourdough bread", Decimal("3.40")),
        ("Eggs, box of 12", Decimal("3.85")),
        ("Coffee beans 250 g", Decimal("6.90")),
        ("Dish soap", Decimal("2.25")),
    ]
    total = sum((price for _, price in items), Decimal("0"))
    paid = Decimal("25.00")
    w, h = 520, 760
    img = Image.new("RGB", (w, h), (235, 232, 225))
    draw = ImageDraw.Draw(img)
    draw.rectangle([40, 20, w - 40, h - 20], fill=(252, 251, 247))
    left, right = 70, w - 70
    draw.text((w // 2, 70), "CORNER GROCERY", font=font(32), fill=INK, anchor="mm")
    draw.text((w // 2, 108), "12 Harbour Street, Bergen", font=font(18), fill=INK, anchor="mm")
    draw.text((w // 2, 134), "14.03.2024  17:42   Till 2", font=font(18), fill=INK, anchor="mm")
    y = 175
    draw.line([(left, y), (right, y)], fill=INK, width=1)
    y += 30
    for name, price in items:
        draw.text((left, y), name, font=font(22), fill=INK, anchor="lm")
        draw.text((right, y), f"{price:.2f}", font=font(22), fill=INK, anchor="rm")
        y += 40
    draw.line([(left, y - 10), (right, y - 10)], fill=INK, width=1)
    y += 20
    draw.text((left, y), "TOTAL EUR", font=font(28), fill=INK, anchor="lm")
    draw.text((right, y), f"{total:.2f}", font=font(28), fill=INK, anchor="rm")
    y += 50
    for label, amount in (("Cash", paid), ("Change", paid - total)):
        draw.text((left, y), label, font=font(22), fill=INK, anchor="lm")
        draw.text((right, y), f"{amount:.2f}", font=font(22), fill=INK, anchor="rm")
        y += 36
    draw.text((w // 2, h - 70), "Thank you for shopping with us!", font=font(20), fill=INK, anchor="mm")
    return png(img)


def count_scene() -> bytes:
    """Seven non-overlapping circles in three colours (see ``COUNT_PER_COLOR``) on a plain background."""
    centres = [(110, 120), (300, 90), (520, 140), (190, 300), (400, 260), (560, 360), (320, 400)]
    colours = ["red", "blue", "green", "red", "green", "red", "blue"]
    img = Image.new("RGB", (660, 500), (245, 243, 235))
    draw = ImageDraw.Draw(img)
    for (x, y), colour in zip(centres, colours, strict=True):
        draw.ellipse([x - 45, y - 45, x + 45, y + 45], fill=COUNT_COLORS[colour], outline=INK, width=2)
    return png(img)


def box(draw: ImageDraw.ImageDraw, centre: tuple[int, int], text: str, width: int = 180) -> None:
    """A rounded flow-chart box with centred (possibly two-line) text."""
    x, y = centre
    draw.rounded_rectangle(
        [x - width // 2, y - 32, x + width // 2, y + 32],
        radius=10,
        fill=(225, 236, 250),
        outline=INK,
        width=2,
    )
    draw.multiline_text((x, y), text, font=font(19), fill=INK, anchor="mm", align="center", spacing=4)


def flow_diagram() -> bytes:
    """A flow chart of an arena battle: boxes, one decision diamond, arrows and a loop back."""
    img = Image.new("RGB", (800, 540), WHITE)
    draw = ImageDraw.Draw(img)
    box(draw, (130, 110), "Upload photo")
    box(draw, (390, 110), "Check the file")
    cx, cy = 640, 110
    draw.polygon(
        [(cx, cy - 55), (cx + 85, cy), (cx, cy + 55), (cx - 85, cy)], fill=(252, 240, 205), outline=INK
    )
    draw.text((cx, cy), "Valid?", font=font(20), fill=INK, anchor="mm")
    box(draw, (640, 270), "Store the image")
    box(draw, (390, 270), "Ask two models")
    box(draw, (130, 270), "Voter picks\nthe better answer")
    box(draw, (130, 440), "Update the\nleaderboard")
    arrow(draw, [(220, 110), (300, 110)])
    arrow(draw, [(480, 110), (555, 110)])
    arrow(draw, [(cx, cy - 55), (cx, 30), (130, 30), (130, 78)])
    draw.text((385, 18), "no: ask for another photo", font=font(18), fill=INK, anchor="mm")
    arrow(draw, [(cx, cy + 55), (cx, 238)])
    draw.text((cx + 12, 195), "yes", font=font(18), fill=INK, anchor="lm")
    arrow(draw, [(550, 270), (480, 270)])
    arrow(draw, [(300, 270), (220, 270)])
    arrow(draw, [(130, 302), (130, 408)])
    return png(img)


def clock() -> bytes:
    """An analogue clock face with numerals showing twenty to five (4:40)."""
    size, r = 560, 240
    c = size // 2
    img = Image.new("RGB", (size, size), WHITE)
    draw = ImageDraw.Draw(img)
    draw.ellipse([c - r, c - r, c + r, c + r], fill=(250, 248, 240), outline=INK, width=6)
    for minute in range(60):
        a = math.radians(minute * 6)
        inner = r - (22 if minute % 5 == 0 else 10)
        draw.line(
            [
                (c + inner * math.sin(a), c - inner * math.cos(a)),
                (c + (r - 4) * math.sin(a), c - (r - 4) * math.cos(a)),
            ],
            fill=INK,
            width=4 if minute % 5 == 0 else 2,
        )
    for hour in range(1, 13):
        a = math.radians(hour * 30)
        draw.text(
            (c + (r - 50) * math.sin(a), c - (r - 50) * math.cos(a)),
            str(hour),
            font=font(34),
            fill=INK,
            anchor="mm",
        )
    hours, minutes = 4, 40
    for angle, length, width in ((hours * 30 + minutes * 0.5, r * 0.5, 10), (minutes * 6, r * 0.68, 6)):
        a = math.radians(angle)
        draw.line([(c, c), (c + length * math.sin(a), c - length * math.cos(a))], fill=INK, width=width)
    draw.ellipse([c - 10, c - 10, c + 10, c + 10], fill=INK)
    return png(img)


def house_scene(variant: bool) -> bytes:
    """A house, tree and sky; the ``variant`` differs in three places (door colour, the sun, a window)."""
    img = Image.new("RGB", (560, 420), (190, 225, 250))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 320, 560, 420], fill=(110, 180, 90))
    if not variant:
        draw.ellipse([450, 30, 520, 100], fill=(250, 210, 50))
    draw.ellipse([80, 50, 200, 100], fill=WHITE)
    draw.rectangle([170, 200, 370, 330], fill=(230, 200, 160), outline=INK, width=2)
    draw.polygon([(150, 200), (270, 120), (390, 200)], fill=(170, 60, 50), outline=INK)
    draw.rectangle(
        [245, 260, 295, 330], fill=(40, 90, 200) if variant else (200, 40, 40), outline=INK, width=2
    )
    draw.rectangle([190, 225, 230, 260], fill=(170, 210, 240), outline=INK, width=2)
    if not variant:
        draw.rectangle([310, 225, 350, 260], fill=(170, 210, 240), outline=INK, width=2)
    draw.rectangle([440, 240, 460, 330], fill=(120, 80, 40))
    draw.ellipse([400, 170, 500, 260], fill=(40, 130, 60))
    return png(img)


@cache
def examples() -> tuple[Example, ...]:
    """Every bundled example, drawn once per process (the result never changes)."""
    return (
        Example(
            "bar-chart",
            "Which month had the highest sales in this chart, and how much higher was it than the lowest month?",
            (bar_chart(),),
        ),
        Example(
            "line-chart",
            "Describe the trend in this chart. In which week did the number of users fall, "
            "and how much did it grow from week 1 to week 10?",
            (line_chart(),),
        ),
        Example(
            "receipt",
            "What was bought on this receipt, and what is the total? Does the total match the items?",
            (receipt(),),
        ),
        Example(
            "count-circles",
            "There are seven circles in this picture. How many of them are red?",
            (count_scene(),),
        ),
        Example(
            "flow-diagram", "Explain the process shown in this diagram, step by step.", (flow_diagram(),)
        ),
        Example(
            "spot-the-difference",
            "Compare the two pictures. List every difference you can find in the second one.",
            (house_scene(variant=False), house_scene(variant=True)),
        ),
        Example("clock", "What time does this clock show?", (clock(),)),
    )


def pick(rng: random.Random) -> Example:
    """One example chosen with the caller's random source (so tests can make the choice deterministic)."""
    return rng.choice(examples())

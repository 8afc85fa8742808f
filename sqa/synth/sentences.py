"""Varied English sentences from a small template grammar of our own, deterministic for a seed.

The demo corpus needs texts for the TTS voice: short (6-16 words, about 2-5 s of speech), natural,
and varied in form -- statements, questions, instructions, times, numbers, names and places. Every
word list and template below was written for this project; no text corpus is copied.

``generate(n, seed)`` draws templates and slot fillers with ``random.Random(seed)`` (stable across
Python versions for integer seeds) and keeps the first ``n`` distinct sentences.
"""

from __future__ import annotations

import random
from typing import Callable

NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas",
    "Kira", "Liam", "Maya", "Nils", "Olga", "Pedro", "Quinn", "Rosa", "Samir", "Tara",
    "Umar", "Vera", "Walter", "Yusuf", "Zoe", "Mister Patel", "Doctor Moreno", "Aunt Lucy",
)
CITIES = (
    "Boston", "Lisbon", "Denver", "Oslo", "Madrid", "Chicago", "Dublin", "Seattle", "Vienna",
    "Toronto", "Prague", "Austin", "Helsinki", "Nairobi", "Melbourne", "Kyoto", "Geneva", "Atlanta",
)
PLACES = (
    "library", "bakery", "train station", "post office", "museum", "harbor", "market", "stadium",
    "hospital", "school", "town hall", "garden center", "bus stop", "pharmacy", "cinema", "beach",
)
ROOMS = ("kitchen", "hallway", "garage", "attic", "office", "basement", "living room", "bedroom")
OBJECTS = (
    "umbrella", "notebook", "blue jacket", "laptop", "bicycle", "camera", "map", "guitar case",
    "lunch box", "scarf", "spare key", "suitcase", "phone charger", "winter coat", "basket",
)
PLURALS = (
    "chairs", "tickets", "sandwiches", "candles", "blankets", "boxes", "pencils", "apples",
    "plates", "volunteers", "maps", "flowers", "cups of coffee", "copies of the report",
)
ADJECTIVES = (
    "quiet", "bright", "cold", "busy", "small", "old", "warm", "crowded", "strange", "clean",
    "noisy", "empty", "lovely", "dusty", "narrow", "friendly",
)
ANIMAL_ADJECTIVES = ("sleepy", "old", "little", "lazy", "young", "shy", "fat", "grumpy")
ANIMALS = ("cat", "dog", "rabbit", "goat", "parrot", "fox", "horse", "duck", "hedgehog", "owl")
FURNITURE = ("table", "sofa", "bench", "bed", "old piano", "kitchen chair", "desk")
RELATIVES = ("sister", "brother", "uncle", "cousin", "grandmother", "neighbor", "best friend")
EVENTS = (
    "meeting", "birthday party", "concert", "football match", "wedding", "book club", "picnic",
    "job interview", "school play", "dinner", "team lunch", "science fair",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PERIODS = ("week", "month", "year", "summer", "winter", "spring")
INSTRUMENTS = ("piano", "violin", "drums", "trumpet", "cello", "flute", "guitar", "harp")
WEATHER = ("sunny", "windy", "rainy", "foggy", "cloudy", "stormy", "cold and dry", "warm and humid")
ERRANDS = (
    "buy some milk", "water the plants", "call the dentist", "feed the cat", "pay the rent",
    "return the books", "charge your phone", "book the tickets", "send the invoice",
    "pick up the kids", "take out the trash", "check the mail",
)
ACTIONS = ("open", "close", "wash", "move", "check", "fold", "carry", "clean", "wrap", "repair")
LANDMARKS = ("church", "gas station", "big oak tree", "roundabout", "bridge", "red barn", "traffic light")
UNITS = ("miles", "minutes", "blocks", "kilometers")
LANDSCAPES = ("river", "beach", "canal", "old railway line", "lake shore", "forest path")
FOODS = ("soup", "pasta", "curry", "fresh bread", "apple pie", "fish", "pancakes", "stew")
TRANSPORT = ("train", "bus", "ferry", "flight", "night train", "coach")

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(k: int) -> str:
    """Spell ``k`` in 0..999 in English words (``42 -> 'forty-two'``)."""
    if not 0 <= k <= 999:
        raise ValueError(f"number_words: k must be in 0..999, got {k}")
    if k < 20:
        return _ONES[k]
    if k < 100:
        tens, ones = divmod(k, 10)
        return _TENS[tens] + ("-" + _ONES[ones] if ones else "")
    hundreds, rest = divmod(k, 100)
    head = f"{_ONES[hundreds]} hundred"
    return head if rest == 0 else f"{head} and {number_words(rest)}"


def _clock(r: random.Random) -> str:
    """A spoken time of day, in one of several styles."""
    hour = r.randint(1, 12)
    style = r.randrange(6)
    if style == 0:
        return f"{number_words(hour)} o'clock"
    if style == 1:
        return f"half past {number_words(hour)}"
    if style == 2:
        return f"a quarter to {number_words(hour)}"
    if style == 3:
        return f"a quarter past {number_words(hour)}"
    minute = r.choice((5, 10, 20, 25, 35, 40, 45, 50, 55))
    if style == 4:
        return f"{number_words(hour)} {number_words(minute)}"
    return f"{hour}:{minute:02d}"


def _count(r: random.Random) -> str:
    """A small quantity, spelled out or as digits."""
    k = r.randint(2, 40)
    return number_words(k) if r.random() < 0.6 else str(k)


def _price(r: random.Random) -> str:
    dollars, cents = r.randint(2, 99), r.choice((0, 25, 50, 75, 95, 99))
    money = f"{number_words(dollars)} dollars"
    return money if cents == 0 else f"{money} and {number_words(cents)} cents"


def _t_lost_object(r: random.Random) -> str:
    return f"{r.choice(NAMES)} left the {r.choice(OBJECTS)} at the {r.choice(PLACES)} on {r.choice(DAYS)}."


def _t_errand_question(r: random.Random) -> str:
    return f"Did you remember to {r.choice(ERRANDS)} before {_clock(r)}?"


def _t_instruction(r: random.Random) -> str:
    return (
        f"Please {r.choice(ACTIONS)} the {r.choice(OBJECTS)} and put it back in the {r.choice(ROOMS)}."
    )


def _t_departure(r: random.Random) -> str:
    return (
        f"The {r.choice(TRANSPORT)} to {r.choice(CITIES)} leaves from platform "
        f"{number_words(r.randint(1, 12))} at {_clock(r)}."
    )


def _t_supplies(r: random.Random) -> str:
    return f"We need {_count(r)} {r.choice(PLURALS)} for the {r.choice(EVENTS)} on {r.choice(DAYS)}."


def _t_message(r: random.Random) -> str:
    return f"Could you tell {r.choice(NAMES)} that the {r.choice(EVENTS)} has moved to {r.choice(DAYS)}?"


def _t_walk(r: random.Random) -> str:
    a, b = r.sample(NAMES, 2)
    return f"{a} and {b} walked along the {r.choice(LANDSCAPES)} until the sun went down."


def _t_weather(r: random.Random) -> str:
    return (
        f"It will be {r.choice(WEATHER)} in {r.choice(CITIES)} tomorrow, "
        f"with temperatures around {number_words(r.randint(2, 35))} degrees."
    )


def _t_directions(r: random.Random) -> str:
    return (
        f"Turn {r.choice(('left', 'right'))} at the {r.choice(LANDMARKS)}, "
        f"then keep going for about {_count(r)} {r.choice(UNITS)}."
    )


def _t_why(r: random.Random) -> str:
    return f"Why is the {r.choice(ROOMS)} always so {r.choice(ADJECTIVES)} in the {r.choice(PERIODS)}?"


def _t_purchase(r: random.Random) -> str:
    return (
        f"My {r.choice(RELATIVES)} bought a {r.choice(ADJECTIVES)} {r.choice(OBJECTS)} "
        f"at a shop near the {r.choice(PLACES)}."
    )


def _t_appointment(r: random.Random) -> str:
    return f"The {r.choice(EVENTS)} with {r.choice(NAMES)} starts at {_clock(r)} in room {r.randint(2, 450)}."


def _t_how_many(r: random.Random) -> str:
    return f"How many {r.choice(PLURALS)} did {r.choice(NAMES)} bring to the {r.choice(EVENTS)}?"


def _t_reminder(r: random.Random) -> str:
    return f"Remember to {r.choice(ERRANDS)} and lock the {r.choice(ROOMS)} door when you leave."


def _t_hobby(r: random.Random) -> str:
    return f"{r.choice(NAMES)} has been learning to play the {r.choice(INSTRUMENTS)} for {_count(r)} years."


def _t_animal(r: random.Random) -> str:
    return (
        f"The {r.choice(ANIMAL_ADJECTIVES)} {r.choice(ANIMALS)} slept under the {r.choice(FURNITURE)} "
        f"all {r.choice(('morning', 'afternoon', 'evening', 'night'))}."
    )


def _t_rumor(r: random.Random) -> str:
    return f"Is it true that {r.choice(NAMES)} moved to {r.choice(CITIES)} last {r.choice(PERIODS)}?"


def _t_price(r: random.Random) -> str:
    return f"The {r.choice(PLURALS)} cost {_price(r)} each, so bring enough cash."


def _t_cooking(r: random.Random) -> str:
    return (
        f"{r.choice(NAMES)} is cooking {r.choice(FOODS)} tonight, "
        f"and dinner should be ready by {_clock(r)}."
    )


def _t_where(r: random.Random) -> str:
    return f"Where did you put the {r.choice(OBJECTS)} after we came back from {r.choice(CITIES)}?"


def _t_phone(r: random.Random) -> str:
    digits = " ".join(number_words(r.randint(0, 9)) for _ in range(4))
    return f"If nobody answers, call {r.choice(NAMES)} and dial extension {digits}."


def _t_careful(r: random.Random) -> str:
    return (
        f"Be careful, the floor in the {r.choice(ROOMS)} is still wet, "
        f"so walk {r.choice(('slowly', 'around it', 'on the mat'))}."
    )


def _t_opening(r: random.Random) -> str:
    open_h, close_h = r.randint(7, 10), r.randint(4, 9)
    return (
        f"On {r.choice(DAYS)} the {r.choice(PLACES)} opens at {number_words(open_h)} "
        f"and closes at {number_words(close_h)} in the evening."
    )


def _t_trip(r: random.Random) -> str:
    origin, destination = r.sample(CITIES, 2)
    return (
        f"Last {r.choice(PERIODS)} we took the {r.choice(TRANSPORT)} from {origin} "
        f"to {destination} to visit my {r.choice(RELATIVES)}."
    )


def _t_call_back(r: random.Random) -> str:
    return f"{r.choice(NAMES)} will call you back at {_clock(r)}."


def _t_smell(r: random.Random) -> str:
    return f"The {r.choice(ROOMS)} smells of {r.choice(FOODS)} again."


def _t_meet(r: random.Random) -> str:
    return f"Let's meet at the {r.choice(PLACES)} on {r.choice(DAYS)}."


def _t_window(r: random.Random) -> str:
    return f"Please close the {r.choice(ROOMS)} window, it is {r.choice(('cold', 'noisy', 'windy'))}."


def _t_hear(r: random.Random) -> str:
    return f"{r.choice(NAMES)}, can you hear me {r.choice(('now', 'clearly', 'at all', 'over there'))}?"


TEMPLATES: tuple[Callable[[random.Random], str], ...] = (
    _t_lost_object, _t_errand_question, _t_instruction, _t_departure, _t_supplies, _t_message,
    _t_walk, _t_weather, _t_directions, _t_why, _t_purchase, _t_appointment, _t_how_many,
    _t_reminder, _t_hobby, _t_animal, _t_rumor, _t_price, _t_cooking, _t_where, _t_phone,
    _t_careful, _t_opening, _t_trip, _t_call_back, _t_smell, _t_meet, _t_window, _t_hear,
)


def generate(n: int, seed: int = 0) -> list[str]:
    """Return ``n`` distinct sentences, the same list for the same ``(n, seed)``.

    A longer list with the same seed starts with the shorter one (``generate(5, s)`` is a prefix
    of ``generate(10, s)``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"generate: n must be a non-negative integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"generate: seed must be an integer, got {seed!r}")
    r = random.Random(seed)
    seen: dict[str, None] = {}
    max_draws = 50 * n + 1000
    draws = 0
    while len(seen) < n:
        if draws == max_draws:
            raise ValueError(
                f"generate: only {len(seen)} distinct sentences after {draws} draws; n={n} is beyond "
                "what the grammar can produce"
            )
        draws += 1
        seen.setdefault(r.choice(TEMPLATES)(r), None)
    return list(seen)


__all__ = ["TEMPLATES", "generate", "number_words"]

"""The prompts of the conflict rows (scripts/make_conflict_rows.py), written for this project from the word lists
below: short factual and formatting questions, and requests to repeat a sentence built from parts (where a small
chat model is confident at almost every word: it copies).

Deliberately absent: arithmetic word problems (the target domain of the regimes), the 42 prompts of
src/eaft/resources/general_prompts.jsonl and their topics (the capital of Japan, planets, Romeo and Juliet, the
heart, synonyms of 'happy'), and multiple-choice or science-question phrasing (the ARC and PIQA general tasks).
"""

from __future__ import annotations

import random

COUNTRIES = (
    "France", "Germany", "Italy", "Spain", "Portugal", "Canada", "Australia", "Egypt", "Kenya", "Brazil",
    "Argentina", "Mexico", "India", "China", "Russia", "Norway", "Sweden", "Finland", "Poland", "Greece",
    "Turkey", "Ireland", "Peru", "Chile", "Thailand", "Vietnam", "Nigeria", "Morocco", "Austria", "Hungary",
    "Denmark", "Belgium", "the Netherlands", "Switzerland", "Cuba", "Iran", "Indonesia", "Pakistan", "Colombia",
    "Ukraine", "Romania", "New Zealand", "South Korea", "the Philippines", "Saudi Arabia", "Ethiopia", "Ghana",
)  # fmt: skip
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
OPPOSITES = (
    "hot", "big", "fast", "light", "early", "open", "full", "young", "rich", "strong", "loud", "soft", "wet",
    "tall", "thick", "wide", "sharp", "clean", "easy", "high", "deep", "bright", "sweet", "brave", "cheap",
    "polite", "ancient", "generous", "noisy", "smooth", "heavy", "north", "inside", "above", "win", "accept",
    "arrive", "remember", "push", "buy",
)  # fmt: skip
PLURALS = (
    "child", "mouse", "goose", "tooth", "foot", "man", "woman", "person", "ox", "cactus", "fungus", "leaf",
    "knife", "wife", "wolf", "life", "half", "shelf", "sheep", "deer", "fish", "moose", "box", "bus", "city",
    "baby", "lady", "puppy", "potato", "tomato", "hero", "echo", "piano", "photo", "radio", "analysis", "crisis",
    "thesis", "phenomenon", "criterion", "index", "appendix",
)  # fmt: skip
PAST_TENSES = (
    "go", "eat", "run", "swim", "sing", "write", "read", "drive", "fly", "begin", "break", "bring", "buy",
    "catch", "choose", "come", "draw", "drink", "fall", "feel", "fight", "find", "forget", "give", "grow",
    "hide", "hold", "keep", "know", "lead", "leave", "lose", "make", "meet", "pay", "ride", "ring", "rise",
    "see", "sell", "send", "shake", "sleep", "speak", "steal", "take", "teach", "think", "throw", "wake", "wear",
)  # fmt: skip
COLOURED = (
    "a ripe banana", "fresh grass", "the sky on a clear day", "fresh snow", "coal", "a ripe tomato", "a carrot",
    "an eggplant", "a lemon", "a lime", "milk", "milk chocolate", "a flamingo", "a polar bear's fur", "a crow",
    "a fire engine", "an emerald", "a sapphire", "a ruby", "a pumpkin", "a cucumber", "blood", "the yolk of an egg",
    "a strawberry", "a blueberry", "a raven", "a panda", "a zebra", "an orange", "a plum",
)  # fmt: skip
ANIMAL_SOUNDS = (
    "dog", "cat", "cow", "sheep", "pig", "duck", "horse", "lion", "owl", "rooster", "frog", "snake", "bee",
    "mouse", "donkey", "goat", "wolf", "crow", "elephant", "turkey",
)  # fmt: skip
BABY_ANIMALS = (
    "cat", "dog", "cow", "horse", "sheep", "goat", "pig", "duck", "goose", "swan", "frog", "kangaroo", "bear",
    "lion", "deer", "owl", "eagle", "rabbit", "seal", "whale", "hen",
)  # fmt: skip
UNITS = (
    ("minutes", "an hour"), ("seconds", "a minute"), ("hours", "a day"), ("days", "a week"), ("months", "a year"),
    ("days", "a leap year"), ("weeks", "a year"), ("centimetres", "a metre"), ("millimetres", "a centimetre"),
    ("metres", "a kilometre"), ("grams", "a kilogram"), ("millilitres", "a litre"), ("years", "a decade"),
    ("years", "a century"), ("years", "a millennium"), ("ounces", "a pound"), ("inches", "a foot"),
    ("feet", "a yard"),
)  # fmt: skip
ELEMENTS = (
    "oxygen", "hydrogen", "carbon", "nitrogen", "gold", "silver", "iron", "sodium", "potassium", "helium", "neon",
    "copper", "lead", "tin", "calcium", "zinc", "mercury", "uranium", "chlorine", "sulfur",
)  # fmt: skip
SHAPES = ("triangle", "square", "pentagon", "hexagon", "heptagon", "octagon", "nonagon", "decagon", "rectangle")
WORDS = (
    "garden", "window", "river", "pencil", "mountain", "yellow", "breakfast", "library", "holiday", "kitchen",
    "bicycle", "thunder", "blanket", "market", "island", "candle", "forest", "basket", "journey", "harbour",
    "lantern", "meadow", "orchestra", "pillow", "rocket", "saddle", "tunnel", "village", "whistle", "compass",
)  # fmt: skip
NUMBERS = (13, 17, 21, 34, 47, 58, 62, 75, 89, 99, 100, 104, 250, 312, 499, 1000, 1500, 2024, 3600, 10000)

#: Parts of the sentences the copy prompts ask to repeat: subject, action, place, time (the time may be empty).
SUBJECTS = (
    "the tired farmer", "my younger sister", "a quiet fox", "the old sailor", "our new neighbour", "a small boy",
    "the busy baker", "a tall woman", "the friendly doctor", "an old teacher", "the young painter", "a brown dog",
    "the bus driver", "my grandfather", "a clever student", "the shy girl", "two noisy children", "the night guard",
)  # fmt: skip
ACTIONS = (
    "carried two heavy baskets", "painted small boats", "planted red tomatoes", "opened the bakery",
    "read a long letter", "fixed the broken fence", "fed the hungry ducks", "cleaned the kitchen window",
    "baked fresh bread", "sold warm apples", "found a silver key", "lost a blue scarf", "wrote a short note",
    "watched the grey clouds", "picked wild flowers", "washed the old car", "played a quiet song",
    "counted the sleeping sheep", "built a wooden chair", "tied a yellow ribbon",
)  # fmt: skip
PLACES = (
    "across the muddy field", "near the river", "behind the old library", "on the harbour wall", "at the busy market",
    "in the village square", "under the wooden bridge", "beside the train station", "by the garden gate",
    "inside the cold barn", "along the narrow street", "on the top floor",
)  # fmt: skip
TIMES = ("", " every evening", " on Sunday morning", " before breakfast", " after the storm", " late last night")
COPY_PHRASINGS = (
    "Repeat the following text exactly: '{}'",
    "Repeat this text word for word: {}",
    "Copy this text exactly as it is: {}",
    "Write this text again without changing anything: {}",
)
COPY_PASSAGES = 1800
SENTENCES_PER_PASSAGE = 3


def sentence(rng: random.Random) -> str:
    parts = (rng.choice(SUBJECTS), rng.choice(ACTIONS), rng.choice(PLACES), rng.choice(TIMES))
    text = f"{parts[0]} {parts[1]} {parts[2]}{parts[3]}."
    return text[0].upper() + text[1:]


def copy_passages(rng: random.Random, count: int) -> list[str]:
    """`count` distinct passages of SENTENCES_PER_PASSAGE sentences drawn from the parts above."""
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen.setdefault(" ".join(sentence(rng) for _ in range(SENTENCES_PER_PASSAGE)))
    return list(seen)


#: (category, phrasings, items); each phrasing is a format string over the item (tuples unpacked).
TEMPLATES = (
    ("capital", ("What is the capital city of {}?", "Which city is the capital of {}?"), COUNTRIES),
    ("language", ("What language do most people speak in {}?", "Which language is mainly spoken in {}?"), COUNTRIES),
    ("continent", ("On which continent is {}?", "Which continent is {} part of?"), COUNTRIES),
    ("currency", ("What currency is used in {}?", "What is the currency of {}?"), COUNTRIES),
    ("day_after", ("Which day of the week comes after {}?", "What day follows {}?"), DAYS),
    ("day_before", ("Which day of the week comes before {}?", "What day comes just before {}?"), DAYS),
    ("month_after", ("Which month comes after {}?", "What month follows {}?"), MONTHS),
    ("month_before", ("Which month comes before {}?", "What month comes just before {}?"), MONTHS),
    ("letter_after", ("Which letter comes after {} in the English alphabet?",), tuple("ABCDEFGHIJKLMNOPQRSTUVWXY")),
    ("opposite", ("What is the opposite of '{}'?", "Give the antonym of the word '{}'."), OPPOSITES),
    ("plural", ("What is the plural of '{}'?", "Write the plural form of the noun '{}'."), PLURALS),
    ("past_tense", ("What is the past tense of '{}'?", "Give the simple past form of the verb '{}'."), PAST_TENSES),
    ("colour", ("What colour is {}?", "Describe the usual colour of {} in one sentence."), COLOURED),
    ("animal_sound", ("What sound does a {} make?", "How would you describe the sound a {} makes?"), ANIMAL_SOUNDS),
    ("baby_animal", ("What is a baby {} called?", "What do you call a young {}?"), BABY_ANIMALS),
    ("units", ("How many {} are in {}?", "How many {} make {}?"), UNITS),
    ("element", ("What is the chemical symbol for {}?", "Which symbol stands for {} on the periodic table?"), ELEMENTS),
    ("shape", ("How many sides does a {} have?",), SHAPES),
    ("uppercase", ("Write the word '{}' in capital letters.",), WORDS),
    ("spelling", ("Spell the word '{}' letter by letter, separated by hyphens.",), WORDS),
    ("number_words", ("Write the number {} in words.",), NUMBERS),
)


def build_prompts(seed: int) -> list[tuple[str, str]]:
    """Every (category, prompt), each item once with a phrasing drawn by `seed`, in a seeded shuffled order."""
    rng = random.Random(seed)
    templates = (*TEMPLATES, ("copy", COPY_PHRASINGS, tuple(copy_passages(rng, COPY_PASSAGES))))
    prompts = []
    for category, phrasings, items in templates:
        for item in items:
            args = item if isinstance(item, tuple) else (item,)
            prompts.append((category, rng.choice(phrasings).format(*args)))
    rng.shuffle(prompts)
    return prompts

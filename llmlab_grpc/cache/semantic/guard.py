"""The precision guard of the semantic cache: when two questions close in meaning are still different.

An embedding puts "What is 25 times 67?" as close to "What is 25 times 68?" (0.96) as
"Tell me a joke" is to "Tell me a funny joke", so a similarity threshold alone serves
wrong answers (GPTCache reports 6-9% of its hits wrong). A candidate above the
threshold is accepted only when none of these checks refuses it:

* **hard salient tokens** — numbers (digits and number words), quoted strings, code
  spans, URLs, units, rates ("a day"), relative dates, "of what number" and the words that ask
  about several things ("many", "multiple", "at once") — are the same in both: plain numbers in the
  same order ("25 minus 67" is not "67 minus 25"), the rest as a multiset, with a number
  and the unit right after it bound into one quantity ("10 miles in km" and "km in 10
  miles" match; "100 F to C" and "100 C to F" do not);
* **names** — capitalised words that are not common sentence words (entities,
  products, places, months) — each occurs in the other question too, in the same order.
  A capitalised first word of a sentence ("Calculate", "Paris") is a name only when the
  other question has it too or lacks a name this one has; a swapped first word is
  caught by the one-word-swap check;
* **negation** — both or neither negate (not, n't, never, no, without, none, ...);
* **kind of answer** — both ask who, when, where, why, how long or a measure alike ("when was it
  built" is not "where was it built", "how do I boil pasta" is not "how long", "how tall is the
  tallest mountain" is not "what is the tallest mountain"); a question word said another
  way counts as that word ("in what year" is when, "which artist" is who, "how come" and "what
  makes" are why);
* **form** — when both say the form of answer they want, it is the same: yes-no ("do I need a
  visa"), how-to ("how do I get a visa") or an explanation ("explain git rebase"); and so is the
  tense when no date fixes the time ("who is the president" is not "who was the president");
* **opposites** — one does not say a word whose opposite the other says (bigger /
  smaller, before / after, buy / sell, ...);
* **swapped words** — each side does not have content words the other lacks ("recipe for
  pancakes" / "recipe for waffles", "read mode" / "write mode"), unless listed synonyms
  explain them; one word only one side adds passes only when it is a word of the question's
  frame (``FRAME_WORDS``: "*convert* 10 miles to km", "which *city*", "the *best* way", "a *funny*
  joke"): any other added word asks another thing ("how long is a cold *contagious*", "a cold
  *sore*", "all *hidden* files", "a good credit score in *canada*"), and the refusal names why
  (an arithmetic operation, a prepositional phrase, an extended last noun, an inserted modifier);
* **order** — the words right after "from", "to", "than", "vs" ... that both mention come in the
  same order, capitalised or not ("from london to paris" is not "from paris to london");
* **subject** — the same auxiliary with "I" on one side and a noun the other never names on the
  other is another question ("should *I* walk" / "should *a child* walk");
* **stranded preposition** — two questions ending in different prepositions ask different
  relations ("cook salmon *to*" / "bake salmon *at*").

Both sides are compared in canonical forms: contractions folded ("what's", "who's"), phrasal
verbs as one verb ("turn off" is "disable", "get rid of" is "remove"), two lone units by their
role in a conversion ("how many ml in a cup" = "cup to ml"), a duration asked in a unit as "how
long" ("how many minutes should pasta boil"), a mid-sentence "when I'm ..." as a condition, not a
question word, "last"/"next" before a date word and "before"/"after" as salient, "100 degrees
fahrenheit", "100°F", "$250", "7%" and "1st" as quantities, "the us" as the country, number words
as digits, "one" as the article it usually is ("calories in one banana" is "in a banana"; it stays
a number beside another number or an arithmetic word, and in "one of"), irregular past forms as
their verb ("built" is "build"), plurals and common suffixes stripped, and a capitalised first
word of a sentence not taken for a name by itself.

The earlier turns, model, parameters and namespace are compared before this, exactly
(the index keeps one partition per combination). Everything here is linear in the
length of the text (simple regexes, no nested quantifiers), and texts are bounded by
the caller (``MAX_SEMANTIC_CHARS``).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from llmlab_grpc.memo import BoundedMemo

_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_CODE = re.compile(r"```[^`]*```|`[^`\n]+`")
_QUOTED = re.compile(r"\"([^\"\n]{1,200})\"|\u201c([^\u201d\n]{1,200})\u201d|(?<![\w])'([^'\n]{1,200})'(?![\w])")
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?(?:/\d{1,6}(?![\d/]))?(?:k(?![A-Za-z0-9]))?")
_PLAIN_WORDS = re.compile(r"[A-Za-z][A-Za-z '\u2019-]*")
"""A quoted string of plain words compares without case ("'Fold in'" is "'fold in'"); any other quoted
text or code keeps it: the regex '\\D+' is not '\\d+'."""
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_'\u2019.-]*[A-Za-z0-9]|[A-Za-z]")
_UNIT_AFTER_NUMBER = re.compile(r"\d\s?°?\s?(m|g|l|s|h|k|c|f)\b|\d\s?(%)", re.IGNORECASE)
_ORDINAL_SUFFIX = re.compile(r"(?:st|nd|rd|th)(?![A-Za-z0-9])", re.IGNORECASE)
CURRENCY_SIGNS = {"$": "usd", "£": "gbp", "€": "eur", "¥": "jpy"}
_DEGREES = frozenset({"", "-", "°", "degree", "degrees", "of a", "of an"})
"""What may stand between a number and its unit: "100 degrees fahrenheit" is "100 F" is "100°F",
"a 12-pound turkey" is "a 12 pound turkey", and "a quarter of a cup" is "a quarter cup"."""

NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
    "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20",
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000", "dozen": "12",
    "half": "0.5", "quarter": "0.25", "twice": "x2", "double": "x2", "triple": "x3", "once": "x1",
    "first": "#1", "second": "#2", "third": "#3", "fourth": "#4", "fifth": "#5", "sixth": "#6", "seventh": "#7",
    "eighth": "#8", "ninth": "#9", "tenth": "#10", "1st": "#1", "2nd": "#2", "3rd": "#3",
    "one-half": "0.5", "one-quarter": "0.25", "three-quarters": "0.75", "three-quarter": "0.75",
}
UNITS = {
    "km": "km", "kilometer": "km", "kilometers": "km", "kilometre": "km", "kilometres": "km",
    "mile": "mi", "miles": "mi", "mi": "mi", "meter": "m", "meters": "m", "metre": "m", "metres": "m",
    "cm": "cm", "centimeter": "cm", "centimeters": "cm", "mm": "mm", "millimeter": "mm", "millimeters": "mm",
    "inch": "in", "inches": "in", "foot": "ft", "feet": "ft", "ft": "ft", "yard": "yd", "yards": "yd",
    "kg": "kg", "kilogram": "kg", "kilograms": "kg", "kilo": "kg", "kilos": "kg", "gram": "g", "grams": "g",
    "pound": "lb", "pounds": "lb", "lb": "lb", "lbs": "lb", "ounce": "oz", "ounces": "oz", "oz": "oz",
    "ton": "t", "tons": "t", "tonne": "t", "tonnes": "t", "liter": "l", "liters": "l", "litre": "l", "litres": "l",
    "ml": "ml", "milliliter": "ml", "milliliters": "ml", "gallon": "gal", "gallons": "gal", "cup": "cup",
    "cups": "cup", "celsius": "c", "centigrade": "c", "fahrenheit": "f", "kelvin": "k",
    "second": "s", "seconds": "s", "sec": "s", "secs": "s", "minute": "min", "minutes": "min", "min": "min",
    "mins": "min", "hour": "h", "hours": "h", "hr": "h", "hrs": "h", "day": "d", "days": "d", "week": "wk",
    "weeks": "wk", "month": "mo", "months": "mo", "year": "yr", "years": "yr", "decade": "dec", "decades": "dec",
    "century": "cent", "centuries": "cent", "dollar": "usd", "dollars": "usd", "usd": "usd", "euro": "eur",
    "euros": "eur", "eur": "eur", "yen": "jpy", "gbp": "gbp", "pence": "gbp-p", "cent": "usd-c", "cents": "usd-c",
    "percent": "%", "percentage": "%", "byte": "B", "bytes": "B", "kb": "kB", "kilobyte": "kB", "kilobytes": "kB",
    "mb": "MB", "megabyte": "MB", "megabytes": "MB", "gb": "GB", "gigabyte": "GB", "gigabytes": "GB", "tb": "TB",
    "terabyte": "TB", "terabytes": "TB", "mph": "mph", "kph": "kph", "kmh": "kph", "watt": "W", "watts": "W",
    "kw": "kW", "kwh": "kWh", "volt": "V", "volts": "V", "calorie": "cal", "calories": "cal", "cals": "cal",
    "kcal": "kcal",
    "bit": "bit", "bits": "bit", "teaspoon": "tsp", "teaspoons": "tsp", "tsp": "tsp", "tablespoon": "tbsp",
    "tablespoons": "tbsp", "tbsp": "tbsp", "pint": "pt", "pints": "pt", "quart": "qt", "quarts": "qt",
    "hz": "Hz", "hertz": "Hz", "ghz": "GHz", "mhz": "MHz",
    "degree": "deg", "degrees": "deg", "radian": "rad", "radians": "rad",
    "daily": "d", "weekly": "wk", "monthly": "mo", "yearly": "yr", "annually": "yr", "hourly": "h",
}
TEMPORAL = {
    "today": "today", "tomorrow": "tomorrow", "yesterday": "yesterday", "tonight": "tonight",
    "morning": "morning", "evening": "evening", "afternoon": "afternoon", "night": "night",
    "weekend": "weekend", "monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu",
    "friday": "fri", "saturday": "sat", "sunday": "sun", "january": "jan", "february": "feb", "march": "mar",
    "april": "apr", "june": "jun", "july": "jul", "august": "aug", "september": "sep", "october": "oct",
    "november": "nov", "december": "dec", "spring": "spring", "summer": "summer", "autumn": "autumn",
    "fall": "autumn", "winter": "winter", "nightly": "night", "ago": "ago", "since": "since", "until": "until",
    "before": "before",
    "after": "after",
}
_SEASON_BEFORE = frozenset({"the", "in", "this", "last", "next", "early", "late", "of", "every", "during"})
"""Before "fall" these make it the season ("in the fall"); elsewhere it is the verb ("did Rome fall")."""
_RELATIVE = {"last": "past", "previous": "past", "past": "past", "next": "next", "coming": "next"}
"""Before a date word or a unit of time these fix which one ("last weekend", "next year"): salient."""
_CARDINAL_TEXT = """zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety"""
_CARDINALS = {w: int(NUMBER_WORDS[w]) for w in _CARDINAL_TEXT.split()}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1000000, "billion": 1000000000}


def _compounds(tokens: list[str], joined: list[bool]) -> dict[int, tuple[int, str]]:
    """Numbers written in several words: {first token: (last token, value)} ("twenty five" and
    "twenty-five" are 25, "two hundred and five" is 205, "one thousand two hundred" is 1200).
    ``joined[k]``: only spaces stand between token k-1 and k. Only a number's grammar joins words
    (tens then a digit, a scale after a number, a smaller number after a scale): "five six", "one
    and two" and "five, six" stay apart."""
    found: dict[int, tuple[int, str]] = {}
    i = 0
    while i < len(tokens):
        words = [(i, w) for w in tokens[i].split("-")]
        j = i + 1
        while j < len(tokens) and joined[j]:
            nxt = tokens[j + 1] if j + 1 < len(tokens) else ""
            if tokens[j] == "and" and words[-1][1] in _SCALES and nxt.split("-")[0] in _CARDINALS and joined[j + 1]:
                j += 1
                continue
            if not all(w in _CARDINALS or w in _SCALES for w in tokens[j].split("-")):
                break
            words.extend((j, w) for w in tokens[j].split("-"))
            j += 1
        value = _number_of([w for _, w in words])
        if len(words) >= 2 and value is not None:
            found[i] = (words[-1][0], value)
            i = words[-1][0] + 1
        else:
            i += 1
    return found


def _number_of(words: list[str]) -> str | None:
    """The value of number words in a number's order, or None when they are not one number."""
    if not all(w in _CARDINALS or w in _SCALES for w in words):
        return None
    total = current = 0
    previous = ""
    for w in words:
        if w in _CARDINALS:
            value = _CARDINALS[w]
            tens_then_digit = previous in _CARDINALS and _CARDINALS[previous] >= 20 and \
                _CARDINALS[previous] % 10 == 0 and 0 < value < 10
            if previous and previous not in _SCALES and not tens_then_digit:
                return None  # "five six", "twenty thirty"
            current += value
        else:
            if not previous:
                return None  # "hundred" alone is NUMBER_WORDS' business
            if _SCALES[w] == 100:
                current = max(current, 1) * 100
            else:
                total += max(current, 1) * _SCALES[w]
                current = 0
        previous = w
    return str(total + current)


ARITHMETIC = frozenset({"plus", "minus", "times", "divided", "multiplied", "multiply", "divide", "add", "subtract",
                        "sum", "product", "squared", "cubed", "power", "root", "percent", "equals", "equal"})
"""Words that make "one" a number rather than an article ("one plus two", "one squared")."""
NEGATIONS = frozenset({"not", "no", "never", "without", "none", "nobody", "nothing", "neither", "nor", "nowhere",
                       "cannot", "cant", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont",
                       "shouldnt", "couldnt", "wouldnt", "hasnt", "havent", "hadnt", "mustnt", "except",
                       "excluding", "lack", "lacks", "avoid"})
_IRREGULAR_TEXT = """
built:build wrote:write written:write spoke:speak spoken:speak made:make took:take taken:take ate:eat eaten:eat
drank:drink drunk:drink went:go gone:go came:come saw:see seen:see gave:give given:give found:find sold:sell
bought:buy thought:think taught:teach began:begin begun:begin ran:run grew:grow grown:grow knew:know known:know
drove:drive driven:drive fell:fall fallen:fall held:hold led:lead meant:mean paid:pay said:say sent:send
spent:spend stood:stand told:tell understood:understand felt:feel kept:keep slept:sleep flew:fly flown:fly
froze:freeze frozen:freeze chose:choose chosen:choose broke:break broken:break forgot:forget forgotten:forget
sang:sing sung:sing swam:swim swum:swim threw:throw thrown:throw wore:wear worn:wear hid:hide hidden:hide
rose:rise risen:rise sank:sink sunk:sink shot:shoot stole:steal stolen:steal struck:strike fought:fight
caught:catch brought:bring got:get gotten:get did:do done:do had:have became:become drew:draw drawn:draw
"""
_IRREGULAR_TEXT += """
bacteria:bacterium criteria:criterion phenomena:phenomenon children:child mice:mouse teeth:tooth geese:goose
cacti:cactus fungi:fungus nuclei:nucleus larvae:larva
"""
IRREGULAR = dict(pair.split(":") for pair in _IRREGULAR_TEXT.split())
"""Past forms of common irregular verbs -> the verb ("when was it built" and "when did they build it"),
and irregular plurals -> the singular ("bacteria" is "bacterium")."""


def _stem(word: str) -> str:
    """A crude suffix stripper (both sides get the same treatment, so odd stems still compare):
    irregular past forms, plurals, -ing, -ed, -ly, -er, -est, and British -ise."""
    word = IRREGULAR.get(word, word)
    adjective_y = len(word) >= 5 and word.endswith("y") and word[-2] not in "aeiouy"
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 5 and word.endswith("uses"):
        word = word[:-2]  # viruses -> virus, octopuses -> octopus (causes -> caus, as cause)
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us")):
        word = word[:-1]  # a singular in -us keeps its s: virus, octopus, bus
    for suffix, keep in (("ing", 3), ("ed", 3), ("ly", 4), ("est", 4), ("er", 4), ("ise", 4), ("al", 4)):
        if word.endswith(suffix) and len(word) - len(suffix) >= keep:
            word = word[: -len(suffix)]
            if suffix == "ise":
                word += "iz"
            elif suffix == "ly" and word.endswith("al") and len(word) >= 6:
                word = word[:-2]  # "chemically" is "chemical" is "chemic"
            break
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]  # bigg -> big, winn -> win
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]  # drive and driving, bake and baking: one stem
    elif adjective_y and word.endswith("y"):
        word = word[:-1]  # leaky and leak, healthy and health (not "cookies": cooky)
    return word


_OPPOSITE_PAIRS = [
    ("bigger", "smaller"), ("larger", "smaller"), ("big", "small"), ("large", "small"), ("largest", "smallest"),
    ("biggest", "smallest"), ("more", "less"), ("more", "fewer"), ("most", "least"), ("higher", "lower"),
    ("high", "low"), ("highest", "lowest"), ("before", "after"), ("above", "below"), ("over", "under"),
    ("increase", "decrease"), ("increases", "decreases"), ("raise", "lower"), ("max", "min"),
    ("maximum", "minimum"), ("first", "last"), ("best", "worst"), ("better", "worse"), ("good", "bad"),
    ("hot", "cold"), ("hotter", "colder"), ("warm", "cool"), ("buy", "sell"), ("add", "remove"),
    ("add", "subtract"), ("plus", "minus"), ("multiply", "divide"), ("times", "divided"), ("north", "south"),
    ("east", "west"), ("up", "down"), ("left", "right"), ("open", "close"), ("start", "stop"), ("start", "end"),
    ("begin", "end"), ("win", "lose"), ("won", "lost"), ("positive", "negative"), ("true", "false"),
    ("cheap", "expensive"), ("cheapest", "most expensive"), ("fast", "slow"), ("faster", "slower"),
    ("fastest", "slowest"), ("old", "new"), ("old", "young"), ("older", "younger"), ("oldest", "youngest"),
    ("long", "short"), ("longer", "shorter"), ("longest", "shortest"), ("heavy", "light"), ("heavier", "lighter"),
    ("early", "late"), ("earlier", "later"), ("inside", "outside"), ("import", "export"), ("encrypt", "decrypt"),
    ("encode", "decode"), ("upload", "download"), ("push", "pull"), ("input", "output"), ("enable", "disable"),
    ("install", "uninstall"), ("allow", "deny"), ("accept", "reject"), ("include", "exclude"), ("min", "max"),
    ("ascending", "descending"), ("increase", "reduce"), ("gain", "lose"), ("advantages", "disadvantages"),
    ("pros", "cons"), ("benefits", "risks"), ("safe", "dangerous"), ("legal", "illegal"), ("easy", "hard"),
    ("easy", "difficult"), ("strong", "weak"), ("rich", "poor"), ("wet", "dry"), ("light", "dark"),
    ("happy", "sad"), ("love", "hate"), ("like", "dislike"), ("always", "never"), ("all", "none"),
    ("everything", "nothing"), ("male", "female"), ("men", "women"), ("boy", "girl"), ("sunrise", "sunset"),
    ("day", "night"), ("summer", "winter"), ("past", "future"), ("previous", "next"), ("last", "next"),
    ("import", "export"), ("to", "from"), ("celsius", "fahrenheit"), ("server", "client"), ("send", "receive"),
    ("deposit", "withdraw"), ("lend", "borrow"), ("borrow", "lend"), ("attack", "defend"), ("union", "intersection"),
]
OPPOSITES: dict[str, frozenset[str]] = {}
for _a, _b in _OPPOSITE_PAIRS:
    OPPOSITES[_a] = OPPOSITES.get(_a, frozenset()) | {_b}
    OPPOSITES[_b] = OPPOSITES.get(_b, frozenset()) | {_a}
_SYNONYM_GROUPS = [
    {"big", "large", "huge", "bigger", "larger"}, {"fast", "fastest", "quick", "quickest", "speed", "rapid"},
    {"good", "benefit", "healthy", "beneficial"}, {"bad", "harm", "harmful", "unhealthy"},
    {"summary", "summarize", "summarise", "short", "brief"}, {"increase", "raise", "turn"},
    {"winner", "won", "win"}, {"money", "currency"}, {"differ", "difference", "different"},
    {"written", "wrote", "author", "writer"}, {"people", "population"}, {"take", "taken"},
    {"make", "cook", "prepare", "bake"}, {"big", "large", "huge"}, {"small", "little", "tiny"},
    {"quick", "fast", "rapid", "quickly"}, {"buy", "purchase"}, {"start", "begin", "launch"},
    {"car", "automobile", "vehicle"}, {"movie", "film"}, {"explain", "describe", "clarify"},
    {"show", "display", "list", "give", "name", "enumerate", "tell"},
    {"write", "compose"}, {"city", "town"}, {"capital", "capital city"},
    {"recommend", "suggest"}, {"help", "assist"}, {"fix", "repair", "solve"}, {"use", "utilize", "employ"},
    {"create", "make", "build", "write"}, {"error", "bug", "issue", "problem"}, {"function", "method"},
    {"program", "script", "code"}, {"meaning", "definition", "mean", "define"}, {"author", "writer", "wrote"},
    {"picture", "photo", "image"}, {"job", "work", "career"}, {"funny", "humorous"}, {"answer", "reply"},
    {"gift", "present"}, {"sick", "ill"}, {"happy", "glad"}, {"smart", "intelligent", "clever"},
    {"begin", "commence"}, {"end", "finish", "conclude"}, {"speak", "talk"}, {"shut", "close"},
    {"happen", "occur"}, {"get", "obtain", "acquire"}, {"need", "require"}, {"find", "locate"},
    {"tell", "say"}, {"country", "nation"}, {"distance", "far"}, {"tall", "high", "height"},
    {"old", "age"}, {"cost", "price", "expensive"}, {"work", "function"}, {"way", "method"},
    {"person", "human"}, {"build", "construct"}, {"length", "long"},
    {"delete", "remove", "erase"}, {"exit", "quit", "close", "leave"}, {"symptom", "sign"},
    {"substitute", "replace", "replacement", "alternative", "instead", "swap"},
    {"calculate", "compute", "calculation", "find"}, {"formula", "equation"}, {"enable", "activate"},
    {"disable", "deactivate"}, {"invent", "inventor", "invention"}, {"fridge", "refrigerator"},
    {"check", "see", "view", "find", "show"}, {"undo", "revert"}, {"recent", "latest", "last", "newest"},
    {"loud", "noise", "noisy"}, {"weather", "forecast"}, {"kid", "child", "children"},
    {"baby", "infant", "newborn"}, {"pregnant", "pregnancy"}, {"fly", "flight", "flying"},
    {"travel", "go", "get", "trip"}, {"compose", "composer"}, {"paint", "painter"}, {"discover", "discoverer"},
    {"between", "vs", "versus", "compare", "comparison"}, {"differ", "difference", "distinguish"},
    {"times", "multiply", "multiplied", "product"}, {"while", "during"}, {"best", "top"},
    {"cheap", "budget", "affordable", "inexpensive"}, {"item", "element"}, {"final", "last"},
    {"drop", "delete", "remove"}, {"fetch", "download"}, {"outside", "outdoors", "outdoor"}, {"toxic", "poisonous"},
    {"often", "frequent", "frequently", "frequency"}, {"quit", "stop"}, {"kill", "terminate"}, {"reason", "cause"},
    {"smartphone", "phone"}, {"patch", "fix", "repair"}, {"lose", "loss"}, {"eat", "intake", "consume", "consumption"},
]
SYNONYMS: dict[str, frozenset[str]] = {}
for _group in _SYNONYM_GROUPS:
    _stems = frozenset(_stem(w) for w in _group)
    for _w in _stems:
        SYNONYMS[_w] = SYNONYMS.get(_w, frozenset()) | (_stems - {_w})
MEASURE_ADJECTIVES = frozenset({"tall", "far", "old", "heavy", "deep", "wide", "fast", "thick", "loud"})
"""After "how" these ask for a measure: "how tall is the tallest mountain" wants a height, "what is the
tallest mountain" a name. Not "big", "large", "high" or "much": "how big is the population" asks what
"what is the population" does."""
MEASURE_NOUNS = frozenset({"height", "distance", "age", "weight", "depth", "width", "speed", "elevation",
                           "altitude", "thickness"})
"""After "what"/"which" (or in a question without a question word) these ask for a measure as "how
tall", "how far", "how old" do."""
QUESTION_WORDS = {"who": "who", "whom": "who", "whose": "whose", "when": "when", "where": "where", "why": "why"}
"""Question words whose answer is of another kind (a person, a time, a place, a reason): they must agree."""
_ASK_NOUNS = {
    **dict.fromkeys(("year", "years", "date", "day", "time", "century", "decade", "month", "season", "hour",
                     "deadline"), "when"),
    **dict.fromkeys(("person", "people", "human", "man", "woman", "artist", "painter", "author", "writer",
                     "scientist", "inventor", "player", "team", "country", "nation", "company", "actor", "singer",
                     "composer", "president", "king", "queen", "leader", "director", "musician", "poet"), "who"),
    **dict.fromkeys(("place", "location"), "where"),
    **dict.fromkeys(("reason", "make", "makes", "cause", "causes"), "why"),
}
"""``what``/``which`` + one of these asks like a question word: "in what year" is "when", "which
artist" is "who", "what makes" is "why" (so a paraphrase that changes its question word still matches)."""
_ASK_SKIP = frozenset({"is", "was", "are", "were", "the", "a", "an", "best", "right", "good", "exact", "ideal",
                       "usual", "current", "local", "first", "last"})
"""Words between ``what``/``which`` and the noun that fixes the kind of answer ("what is the best *time*")."""


SUBJECT_PRONOUNS = frozenset({"i", "im", "ive", "you", "youre", "we", "it", "its", "he", "she", "they",
                              "theyre"})
_KNOW_VERBS = frozenset({"know", "tell", "me", "ask", "wonder", "remember", "sure", "say", "and", "or"})
"""Before these, a mid-sentence "when" asks (an embedded question: "do you know when it sank")."""
_WH = frozenset({"what", "which", "who", "whom", "whose", "when", "where", "why", "how", "whats", "whos", "hows",
                 "wheres"})
_DURATION_UNITS = frozenset({"second", "seconds", "minute", "minutes", "hour", "hours", "day", "days", "week",
                             "weeks", "month", "months", "year", "years"})
_WHEN_RATINGS = frozenset({"best", "right", "good", "ideal", "optimal"})
_WHEN_TIMES = frozenset({"opening", "closing", "arrival", "departure", "start", "starting", "launch", "release",
                         "kickoff", "check-in", "checkout", "sunrise", "sunset"})
_SPAN_TIMES = frozenset({"travel", "flight", "drive", "commute", "wait", "recovery", "transit", "prep", "cook",
                         "bake", "rest", "boil", "charge", "download", "load", "response", "delivery", "shipping"})
"""Before "time": a moment ("opening time": when) or a span ("travel time", "resting time": how long)."""
_LENGTH_UNITS = frozenset({"km", "mi", "m", "cm", "mm", "in", "ft", "yd"})
_DURATION_VERBS = frozenset({"take", "takes", "took", "taken", "last", "lasts", "stay", "stays", "keep", "keeps"})
"""In a how-long question these only carry the question ("how long does it take", "how long does it
last", "how long can it stay"): not words of its topic."""


def _question_kinds(tokens: list[str], counted: bool = False,
                    duration: list[str] | None = None) -> tuple[frozenset[str], set[int], set[int]]:
    """(the kinds of answer ``tokens`` asks for, the indexes of the nouns that say it, the indexes of
    words that only frame the question; ``duration`` gets the unit a
    duration is asked in).

    A kind noun ("year" in "in what year") is part of the question word, not a unit or a date. A
    duration asked in a unit ("how many minutes should pasta boil", "the boiling time", "how much
    time") asks "how long" when the question holds no other number or unit (``counted``: it has a
    number): "how many minutes are in 3 hours" is a conversion and keeps its units. "When" followed
    by its clause's subject in the middle of a sentence ("can I fly when I'm pregnant", "what do you
    get when you multiply") is a condition, not a question word, unless a verb of knowing asks it
    ("do you know when it sank"); so is a leading "when it's 9am, what time is it" clause."""
    kinds: set[str] = set()
    consumed: set[int] = set()
    frame: set[int] = set()
    duration = [] if duration is None else duration
    other_units = sum(1 for t in tokens if t in UNITS and t not in _DURATION_UNITS)
    first_wh = next((i for i, t in enumerate(tokens) if t in _WH), len(tokens))
    for i, word in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if word == "when" and nxt in SUBJECT_PRONOUNS and (
                (i > 0 and tokens[i - 1] not in _KNOW_VERBS)
                or any(t in ("what", "which", "how", "who", "where", "why") for t in tokens[i + 2:])):
            continue  # a condition: "... when I'm pregnant"
        if word in ("when", "where", "whose") and i > 0 and tokens[i - 1] not in _KNOW_VERBS and (
                first_wh < i or tokens[0] in AUXILIARIES):
            continue  # a clause of a question already asked: "the best way to deal with jet lag *when* flying
            # east", "how do I select rows *where* a column is null", "is it safe to swim *when* pregnant"
        if word in QUESTION_WORDS:
            kinds.add(QUESTION_WORDS[word])
        elif word == "how" and nxt in MEASURE_ADJECTIVES:
            kinds.add("measure")  # "how tall is the tallest mountain" is not "what is the tallest mountain"
        elif word == "how" and nxt in ("come", "long"):
            kinds.add("why" if nxt == "come" else "how long")  # "how do I boil" is not "how long"
            frame.add(i + 1)  # "long" is part of the question word
        elif (word == "how" and nxt in ("many", "much") and i + 2 < len(tokens) and not counted
              and not other_units and (tokens[i + 2] in _DURATION_UNITS or (nxt == "much" and tokens[i + 2] == "time"))
              and sum(t in _DURATION_UNITS for t in tokens) == 1):
            kinds.add("how long")  # "how many minutes should pasta boil" asks how long it should
            frame.update((i + 1, i + 2))
            duration.append(tokens[i + 2])
        elif word == "length" and i > 0 and tokens[i - 1] == "the" and tokens[i + 1:i + 2] == ["of"]:
            kinds.add("how long")
        elif word == "duration":
            kinds.add("how long")
            frame.add(i)
        elif word in ("what", "which", "whats"):
            j = i + 1
            while j < len(tokens) and tokens[j] in _ASK_SKIP:
                j += 1
            kind = _ASK_NOUNS.get(tokens[j]) if j < len(tokens) else None
            if j < len(tokens) and tokens[j] in MEASURE_NOUNS and (j + 1 == len(tokens) or tokens[j + 1] in _LINKS):
                kind = "measure"  # "what is the height of" asks what "how tall is" does ("speed limit": a compound)
            if kind == "why" and (word != "what" or j != i + 1) and tokens[j] != "reason":
                kind = None  # "what makes" and "what causes" ask why; "which cause" does not
            if kind == "when" and j + 1 < len(tokens) and tokens[j + 1] not in STOPWORDS:
                kind = None  # "what is the time complexity", "what time zone": a compound, not a time
            if kind is not None:
                kinds.add(kind)
                if kind == "when":
                    consumed.add(j)
    if not kinds and not any(t in _WH for t in tokens):
        for i, word in enumerate(tokens):  # "four seasons composer?", "declaration signing date?"
            timed = word in ("date", "deadline") or (word == "time" and i > 0 and tokens[i - 1] in _WHEN_RATINGS)
            if timed or (_ASK_NOUNS.get(word) == "who" and word not in ("people", "person", "human")):
                kinds.add("when" if timed else "who")  # "filing deadline?", "best time to plant tulips"
                (frame if word == "time" else consumed).add(i)
            elif (word in MEASURE_NOUNS and (i == len(tokens) - 1 or tokens[i + 1] in _LINKS)
                  and not (i and tokens[i - 1] in NARROWING | {"high", "low"})):
                kinds.add("measure")  # "eiffel tower height?" asks what "how tall is the eiffel tower" does
    for i, word in enumerate(tokens):
        if word == "time" and i > 0 and i not in consumed and i not in frame:
            before = tokens[i - 1]
            if before in _WHEN_TIMES:
                kinds.add("when")  # "stock market opening time?" asks when it opens
                frame.add(i)
            elif (before.endswith("ing") and before not in ("morning", "evening")) or before in _SPAN_TIMES:
                kinds.add("how long")  # "the travel time of light", "steak resting time"
                frame.add(i)
    if "how long" in kinds and any(UNITS.get(t) in _LENGTH_UNITS for t in tokens):
        kinds.discard("how long")  # "how long is a marathon in km" asks a distance, as "how many km" does
    if "how long" in kinds:
        frame.update(i for i, t in enumerate(tokens) if t in _DURATION_VERBS)
    return frozenset(kinds), consumed, frame


PHRASAL = {
    ("turn", "on"): "enable", ("switch", "on"): "enable", ("turn", "off"): "disable", ("switch", "off"): "disable",
    ("find", "out"): "find", ("figure", "out"): "find", ("look", "up"): "find", ("set", "up"): "create",
    ("work", "out"): "calculate", ("come", "up"): "invent", ("get", "rid"): "remove", ("pay", "off"): "repay",
    ("pay", "down"): "repay", ("get", "out"): "exit", ("log", "in"): "login", ("sign", "in"): "login",
    ("log", "out"): "logout", ("sign", "out"): "logout", ("shut", "down"): "shutdown", ("go", "down"): "sink",
    ("make", "up"): "", ("going", "to"): "", ("come", "out"): "release", ("turn", "into"): "convert",
}
"""Phrasal verbs -> one verb, so that their particle is not a word of their own ("turn off" is
"disable", the opposite of "turn on"; "get rid of hiccups" is "remove"). The particle may follow
a pronoun object ("turn it off"). "" is a verb that only frames the question: "how many ounces
*make up* a pound" asks what "are in a pound" does, "is it *going to* rain" what "will it rain"
does."""
_PHRASAL_STEMS = {(IRREGULAR.get(v, v), p): c for (v, p), c in PHRASAL.items()}


SPEECH_VERBS = frozenset({"say", "says", "said", "saying", "translate", "translated", "spell", "pronounce"})
_SPEECH_END = frozenset({"in", "into", "to", "from", "for", "on", "at", "with", "when"})


def _spoken(tokens: list[str]) -> set[int]:
    """Indexes of the words said after a speech verb ("how do I say *thank you* in Japanese"): there
    even pleasantries and pronouns are the content, up to the next preposition."""
    found: set[int] = set()
    for i, word in enumerate(tokens):
        if word in SPEECH_VERBS:
            j = i + 1
            while j < len(tokens) and tokens[j] not in _SPEECH_END and j - i <= 6:
                found.add(j)
                j += 1
    return found


_SEPARABLE = {("get", "out"): "remove", ("take", "out"): "remove", ("turn", "off"): "disable",
              ("turn", "on"): "enable", ("switch", "off"): "disable", ("switch", "on"): "enable",
              ("figure", "out"): "find", ("find", "out"): "find", ("work", "out"): "calculate",
              ("pay", "off"): "repay", ("look", "up"): "find", ("set", "up"): "create", ("turn", "into"): "convert"}
"""Phrasal verbs whose object may stand between verb and particle ("get a stain *out*", "turn the
lights *off*"); "get out" with nothing between is "exit"."""
_PARTICLES = frozenset({"up", "down", "out", "off", "on", "in", "over", "away", "back"})
_NOT_OBJECT = frozenset({"of", "in", "on", "to", "from", "for", "with", "and", "or", "at", "by", "into", "than"})


def _phrasal(tokens: list[str]) -> tuple[dict[int, str], set[int]]:
    """({verb index: its one-verb meaning}, the particles' indexes) of ``tokens``' phrasal verbs."""
    verbs: dict[int, str] = {}
    particles: set[int] = set()
    for i, word in enumerate(tokens):
        base = IRREGULAR.get(word, word)
        for cut in ("", "s", "ed", "ing"):
            if cut and base.endswith(cut) and len(base) - len(cut) >= 2:
                base = base[: -len(cut)]
                break
        for j in (i + 1, i + 2):
            if j >= len(tokens) or (j == i + 2 and tokens[i + 1] not in ("it", "them", "this", "that")):
                break
            canon = next((_PHRASAL_STEMS[k] for k in ((word, tokens[j]), (base, tokens[j]), (base + "e", tokens[j]),
                                                       (base[:-1], tokens[j])) if k in _PHRASAL_STEMS), None)
            if canon is not None:
                verbs[i] = canon
                particles.add(j)
                break
        if i in verbs:
            continue
        for j in range(i + 2, min(i + 5, len(tokens))):  # an object of up to three words between
            if tokens[j - 1] in _NOT_OBJECT or tokens[j - 1] in _PARTICLES:
                break
            if tokens[j] != "into" and j + 1 < len(tokens) and tokens[j + 1] not in _NOT_OBJECT:
                continue  # the particle ends the phrase: "get a stain *out* of", not "turn up the volume *on* my phone"
            canon = next((_SEPARABLE[k] for k in ((base, tokens[j]), (base + "e", tokens[j])) if k in _SEPARABLE), None)
            if canon is not None:
                verbs[i] = canon
                particles.add(j)
                break
    return verbs, particles


DIRECTIONAL = frozenset({"than", "to", "from", "into", "vs", "versus", "before", "after", "over", "under", "beat",
                         "beats", "defeat", "defeated", "against", "minus", "divided", "above", "below"})
"""Words that make the order of two names matter."""
_STOP_TEXT = """
a an the and or but if then so of to in on at by for with from into onto about as is are was were be been
being am do does did doing done have has had having i me my mine we us our you your yours he him his she her
it its they them their this that these those there here what which who whom whose when where why how whats
whos hows wheres can could would should will shall may might must please kindly tell give show let lets
explain describe say know want need like just also very really quite some any
each every much many one ones something anything someone anybody anyone s t d ll ve re m
o y im ive id youre dear hi hello hey thanks thank okay ok yes actually basically exactly simply tellme
whatre way ways
"""
STOPWORDS = frozenset(_STOP_TEXT.split())
"""Sentence words that carry no salient meaning here: never names, never counted in a one-word swap."""
_LINKS = STOPWORDS | {"between", "from", "to", "of", "in", "on", "at", "for", "with"}
"""After a measure noun these show it is the head ("the distance *between*"), not part of a compound
("the speed *limit*")."""
OPENERS = frozenset({"well", "so", "now"})
"""Words that open a sentence without meaning ("Well, ..."): ignored only there ("well water" counts)."""
PRONOUNS = frozenset({"you", "me", "him", "her", "us", "them", "it", "yourself", "myself"})
OBJECTS = frozenset({"me", "him", "her", "us", "them"})
"""An object pronoun ending the question after its verb says whom the answer is about."""
PREPOSITIONS = frozenset({"for", "to", "with", "about", "from", "at", "on", "by", "like", "against", "than"})
"""A pronoun after one of these says who the answer is about: a content word, unlike a subject."""


@dataclass(frozen=True)
class Features:
    """What the guard compares, computed once per text (the index keeps them per entry)."""

    hard: tuple[str, ...]
    """Plain numbers in order, then the other salient tokens sorted (a multiset)."""
    names: tuple[str, ...]
    soft_names: tuple[str, ...]
    """Capitalised first words of sentences: names, or just a sentence's first word."""
    words: tuple[str, ...]
    """Lowercased word tokens in order (names are checked against these)."""
    content: frozenset[str]
    negated: bool
    asks: frozenset[str]
    """The question words that fix what kind of answer is wanted: who, when, where, why."""
    tail: str = ""
    """The text's last word when nothing but punctuation follows it ("cook salmon *to*?"), else ""."""
    duration: str = ""
    """The unit a how-long question is asked in ("how many *minutes* should pasta boil"): it matches
    "how long should I boil pasta", which names none, but not "how many *hours* ..."."""


def _number(text: str) -> str:
    """A number's canonical value: "1,000" and "1000", "1/4" and "0.25", "200k" and "200000"."""
    raw = text.replace(",", "")
    thousands = raw.endswith("k")
    raw = raw.removesuffix("k")
    try:
        top, _, bottom = raw.partition("/")
        value = Decimal(top) / Decimal(bottom) if bottom else Decimal(top)
        value = value * 1000 if thousands else value
    except (InvalidOperation, ArithmeticError):
        return raw
    if not value.is_finite():
        return raw
    normal = value.normalize()
    return format(normal, "f") if normal == normal.to_integral() else str(normal)


ABBREVIATIONS = {"js": "javascript", "int": "integer", "ints": "integers", "info": "information", "pic": "picture",
                 "pics": "pictures", "ww2": "wwii", "ww1": "wwi", "dict": "dictionary", "dicts": "dictionaries",
                 "temp": "temperature", "temps": "temperatures", "avg": "average", "env": "environment",
                 "pc": "computer", "pcs": "computers"}
"""Short forms read as the word they stand for ("JS" is JavaScript, "int" is integer). Only forms that
stand for one thing: not "app" (a program, or a job application), "auto" (a car, or automatic)."""


def _singular_acronym(token: str) -> str:
    """"IRAs" is the plural of "IRA", "CPUs" of "CPU": the acronym."""
    return token[:-1] if len(token) >= 3 and token[-1] == "s" and token[:-1].isupper() else token


def _fold(word: str) -> str:
    word = word.lower().replace("\u2019", "'").strip(".-'")
    for suffix in ("'s", "'"):
        if word.endswith(suffix):
            word = word[: -len(suffix)]
    word = word.replace("'", "")
    return ABBREVIATIONS.get(word, word)


def _counts_half(tokens: list[str], index: int) -> bool:
    """Whether "half" is a number ("half a cup", "half of 20", "two and a half"), not part of a
    term ("the half life of carbon 14")."""
    after = tokens[index + 1] if index + 1 < len(tokens) else ""
    before = tokens[index - 1] if index else ""
    return after in ("a", "an", "of", "the") or after in UNITS or before in ("and", "a")


def _adverb(text: str, end: int, after: str) -> bool:
    """Whether an ordinal ending at ``end`` is an adverb ("pay off debt *first* or invest?"): nothing
    it could count follows it (the end, a comma, "or", "and", "then"), unlike "the *first* president"."""
    rest = text[end:].lstrip()
    return not rest or rest[0] in ".,;:!?" or after in ("or", "and", "then")


def _starts_sentence(text: str, at: int) -> bool:
    before = text[:at].rstrip()
    return not before or before[-1] in ".!?:;\n"


_REWRITES = [
    (re.compile(r"\b(?:miles?|mi)\s*(?:per|an|a|/)\s*(?:hour|hr|h)\b", re.IGNORECASE), "mph"),
    (re.compile(r"\b(?:kilomet(?:er|re)s?|km)\s*(?:per|an|a|/)\s*(?:hour|hr|h)\b|\bkmh\b", re.IGNORECASE), "kph"),
    (re.compile(r"\s?\u00bd"), " 1/2"), (re.compile(r"\s?\u00bc"), " 1/4"), (re.compile(r"\s?\u00be"), " 3/4"),
    (re.compile(r"\b(\w+)-free\b", re.IGNORECASE), r"without \1"),
    (re.compile(r"\s*\bor not\b", re.IGNORECASE), ""),
]
"""One way of writing what has several: "60 miles per hour" is "60 mph", "59\u00bd" is "59 1/2" (as "59 and
a half" is), "chemical-free" is "without chemical", and "good idea or not?" asks whether, negating nothing."""


def _rewrite(text: str) -> str:
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    return text


FEATURES_MEMO_ENTRIES = 4096
FEATURES_MEMO_ENTRY_BYTES = 6144
"""The guard's views of texts are kept for at most this many texts, each only when its estimated size
(``_features_bytes``) is at most this: 25 MB at most, whatever the questions hold (a 2,000-character
question's view takes ~30 kB: such texts are read again each time, in linear time)."""


def _features_bytes(text: str) -> int:
    """A view's size in memory with its key, estimated from measurements (tracemalloc: 2.1 kB for a
    42-character question, 3.7 kB for 177 characters, 22-29 kB for 1,900-2,000)."""
    return 1536 + 16 * len(text)


class _FeaturesMemo(BoundedMemo[str, "Features"]):
    """Shared by the worker thread that looks up and the event loop that judges peers' matches."""

    def __init__(self) -> None:
        super().__init__(FEATURES_MEMO_ENTRIES, FEATURES_MEMO_ENTRY_BYTES)
        self.lock = threading.Lock()

    def view(self, text: str) -> Features:
        with self.lock:
            found = self.get(text)
        if found is None:
            found = _read(text)
            with self.lock:
                self._keep(text, found, _features_bytes(text))
        return found


_MEMO = _FeaturesMemo()


def features(text: str) -> Features:
    """The guard's view of ``text``, kept (``_FeaturesMemo``): an entry's text is seen on every lookup near it."""
    return _MEMO.view(text)


def _read(text: str) -> Features:
    """The guard's view of ``text``, computed."""
    hard: list[tuple[int, str]] = []
    rest = _rewrite(text)
    for pattern, tag in ((_URL, "url"), (_CODE, "code"), (_QUOTED, "q")):
        for m in pattern.finditer(rest):
            body = next((g for g in m.groups() if g), m.group(0)) if m.groups() else m.group(0)
            body = body.strip().rstrip('.,;:!?)')
            hard.append((m.start(), f"{tag}:{body.lower() if _PLAIN_WORDS.fullmatch(body) else body}"))
        rest = pattern.sub(lambda m: " " * len(m.group(0)), rest)
    numbers: dict[int, tuple[int, str]] = {}  # end -> (start, value)
    money: list[str] = []
    thousands: set[int] = set()  # where the "k" of "200k" stands: no unit there
    for m in _NUMBER.finditer(rest):
        if m.group(0).endswith("k"):
            thousands.add(m.end() - 1)
            rest = rest[:m.end() - 1] + " " + rest[m.end():]  # no word "k" either
        value = _number(m.group(0).lstrip("+"))
        suffix = _ORDINAL_SUFFIX.match(rest, m.end())
        if suffix and "." not in value:  # "1st" is "first"
            value = "#" + value
            rest = rest[:suffix.start()] + " " * len(suffix.group(0)) + rest[suffix.end():]
        sign = rest[:m.start()].rstrip()[-1:]
        if sign in CURRENCY_SIGNS and not value.startswith("#"):  # "$250" is "250 dollars"
            money.append(f"q:{value} {CURRENCY_SIGNS[sign]}")
            continue
        numbers[m.end()] = (m.start(), value)
    units: list[tuple[int, int, str]] = [(m.start(g), m.end(g), m.group(g).lower())
                                         for m in _UNIT_AFTER_NUMBER.finditer(rest)
                                         for g in (1, 2) if m.group(g) and m.start(g) not in thousands]
    unit_starts = {start for start, _e, _u in units}
    words: list[str] = []
    names: list[str] = []
    soft: list[str] = []
    negated = False
    many = False
    content: set[str] = set()
    matches = [(m, f) for m in _WORD.finditer(rest) if (f := _fold(_singular_acronym(m.group(0))))]
    tokens = [f for _, f in matches]
    counted = bool(numbers) or any((t in NUMBER_WORDS and t != "one") or t in ARITHMETIC for t in tokens)
    duration: list[str] = []
    asks, kind_nouns, frame = _question_kinds(tokens, counted, duration)
    verbs, particles = _phrasal(tokens)
    spoken = _spoken(tokens)
    joined = [k > 0 and rest[matches[k - 1][0].end():m.start()].strip() == "" for k, (m, _) in enumerate(matches)]
    compounds = _compounds(tokens, joined)
    in_compound = {k for first, (last, _) in compounds.items() for k in range(first + 1, last + 1)}
    for index, (m, folded) in enumerate(matches):
        token = m.group(0)
        if index in compounds:  # "twenty five" is 25, as "25" is
            last, value = compounds[index]
            numbers[matches[last][0].end()] = (m.start(), value)
        if index in compounds or index in in_compound:
            words.extend(folded.split("-"))
            continue
        if index in kind_nouns:  # "year" in "in what year": a word of the question, not a unit
            words.append(folded)
            content.add(_stem(folded))
            continue
        if m.start() in unit_starts:  # the "F" of "100°F": a unit, not a name
            words.append(folded)
            continue
        if index in frame or index in particles:  # "how *many minutes*", "turn it *off*": no word of their own
            words.append(folded)
            continue
        if index in verbs:  # "turn off" is "disable"
            words.extend((folded, verbs[index]) if verbs[index] else (folded,))
            if verbs[index]:
                content.add(_stem(verbs[index]))
            continue
        for part in folded.split("-") if "-" in folded else (folded,):
            words.append(part)
        if "-" in folded and folded.replace("-", "").isalpha():  # "Wi-Fi" is "wifi", "push-ups" "pushups"
            folded = folded.replace("-", "")
            words.append(folded)
        low = folded
        if low in NEGATIONS or token.lower().replace("\u2019", "'").endswith("n't"):
            negated = True
        after = tokens[index + 1] if index + 1 < len(tokens) else ""
        dated = low in TEMPORAL and not (low == "fall" and (index == 0 or tokens[index - 1] not in _SEASON_BEFORE))
        before = tokens[index - 1] if index else ""
        letter_unit = token in ("C", "F") and (rest[m.start() - 1:m.start()] == "\u00b0"
                                              or before in ("in", "to", "into"))
        if (low in MANY_WORDS and not (low == "many" and before in _NOT_MANY_AFTER)) \
                or (low == "once" and before == "at"):
            many = True  # "rename *many* files *at once*" is not "rename a file"
        if low in ("what", "which") and before == "of":
            hard.append((m.start(), "t:of-what"))  # "340 is 17% *of what* number" asks the base, not the part
        if low in _RELATIVE and (after in TEMPORAL or after in _DURATION_UNITS):
            hard.append((m.start(), "t:" + _RELATIVE[low]))  # "last weekend" is not "this weekend"
        if low == "one" and not counted and tokens[index + 1:index + 2] != ["of"]:
            pass  # "calories in one banana" asks what "in a banana" does; "one of them", "one plus two" count
        elif low in NUMBER_WORDS and not (NUMBER_WORDS[low].startswith("#") and _adverb(rest, m.end(), after)) \
                and not (low == "half" and not _counts_half(tokens, index)) \
                and not (low == "once" and after not in ("a", "an", "per", "every", "each", "or", "more")):
            numbers[m.end()] = (m.start(), NUMBER_WORDS[low])
        elif low in UNITS:
            units.append((m.start(), m.end(), UNITS[low]))
        elif letter_unit:
            units.append((m.start(), m.end(), low))  # "\u00b0C into \u00b0F", "180 C in F"
        elif dated:
            hard.append((m.start(), "t:" + TEMPORAL[low]))
        elif any(c.isupper() for c in token) and low not in STOPWORDS and low not in NEGATIONS:
            first = _starts_sentence(rest, m.start())
            (soft if first and token[1:] == token[1:].lower() else names).append(low)
        if index in spoken and low not in DETERMINERS:
            content.add(low)  # "say *thank you*" is not "say *sorry*"
        elif (low not in STOPWORDS and low not in NEGATIONS and low not in NUMBER_WORDS and low not in UNITS
                and low not in MANY_WORDS and not dated and not letter_unit
                and not (low in OPENERS and _starts_sentence(rest, m.start()))):
            content.add(_stem(low))
        elif low in PRONOUNS and index > 0 and tokens[index - 1] in PREPOSITIONS:
            content.add(low)  # "good for you" is not "good for dogs"
        elif low in OBJECTS and index == len(tokens) - 1 and index > 0 and tokens[index - 1] not in STOPWORDS:
            content.add(low)  # "stop my cat scratching *me*" is not "... scratching the couch"
        elif low == "us" and (token == "US" or (index > 0 and tokens[index - 1] == "the")) and after not in UNITS:
            content.add("usa")  # "the us", "US": the country, not the pronoun
            names.append("usa")
            words[-1] = "usa"
        if (low in _AMERICA and (index == 0 or tokens[index - 1] not in _CONTINENT_PARTS)) \
                or (low == "states" and index > 0 and tokens[index - 1] == "united"):
            # "the United States", "America", "Americans": the country
            _as_country("usa", low, ("united", "states", low), True, names, content, words)
        country = COUNTRY_FORMS.get(low) or ("uk" if low == "kingdom" and before == "united" else "")
        if country and (low != "uk" or token == "UK" or before == "the"):
            # "British", "Britain", "the UK", "the United Kingdom": one country
            named = low in names or (country == "uk" and "united" not in names) or any(c.isupper() for c in token)
            _as_country(country, low, ("united", low, country), named, names, content, words)
        if low in ("world", "planet", "globe") and before == "the":
            content.discard(_stem(low))  # "the biggest ocean *in the world*" is "... *on Earth*"
            content.add("earth")
            words.append("earth")
        if low == "first" and (rest[m.end():].lstrip()[:1].isdigit() or after in _CARDINALS):
            numbers.pop(m.end(), None)  # "the *first* 10 rows" are "the *top* 10 rows"
            content.add("top")
    units.sort()
    units = [u for i, u in enumerate(units)  # "degrees" before "fahrenheit" only joins it to its number
             if not (u[2] == "deg" and i + 1 < len(units) and units[i + 1][2] in ("c", "f", "k")
                     and rest[u[1]:units[i + 1][0]].strip() == "")]
    quantities: list[str] = []
    for start, _end, unit in units:
        bound = next(((n_end, value) for n_end, (_s, value) in numbers.items()
                      if 0 <= start - n_end <= 9 and rest[n_end:start].strip().lower() in _DEGREES), None)
        if bound is not None:
            del numbers[bound[0]]
            quantities.append(f"q:{bound[1]} {unit}")
        elif unit == "yr" and (_YEAR_NUMBER.match(rest, _end) or _YEAR_BEFORE.search(rest[max(0, start - 24):start])):
            quantities.append("")  # "tax year 2024", "the 2024 tax year": the year named, not a unit
        elif unit in _RATE_UNITS and _per(rest[max(0, start - 24):start], rest[start:_end]):
            quantities.append(f"r:{unit}")  # "calories *a day*", "*daily* calories": a rate, not a conversion
        else:
            quantities.append(f"u:{unit}")
    plain = tuple("n:" + value for _, (_s, value) in sorted(numbers.items(), key=lambda kv: kv[1][0]))
    plain += _unit_roles([(start, q) for (start, _e, _u), q in zip(units, quantities, strict=True)
                          if q.startswith("u:")], matches, tokens, any(q.startswith("q:") for q in quantities))
    others = tuple(sorted([h for _, h in hard] + [q for q in quantities if q and not q.startswith("u:")] + money
                          + (["t:many"] if many else [])))
    return Features(hard=plain + others, names=tuple(names), soft_names=tuple(soft), words=tuple(words),
                    content=frozenset(content), negated=negated, asks=asks,
                    duration=UNITS.get(duration[0], "") if duration else "",
                    tail=tokens[-1] if matches and not any(c.isalnum() for c in rest[matches[-1][0].end():]) else "")


MANY_WORDS = frozenset({"many", "multiple", "several", "bulk", "batch"})
"""Words that ask about several things at once: salient, both sides say one or neither ("how do I
rename *multiple* files" is not "how do I rename a file")."""
_NOT_MANY_AFTER = frozenset({"how", "so", "too", "as"})
"""Before "many" these make it a count or a degree ("*how* many files"), not several things."""

_COUNTRY_TEXT = """
british:uk britain:uk uk:uk french:france german:germany japanese:japan chinese:china italian:italy
spanish:spain canadian:canada canadians:canada mexican:mexico mexicans:mexico indian:india australian:australia
australians:australia russian:russia irish:ireland dutch:netherlands holland:netherlands swiss:switzerland
swedish:sweden korean:korea brazilian:brazil egyptian:egypt greek:greece portuguese:portugal norwegian:norway
danish:denmark finnish:finland polish:poland belgian:belgium austrian:austria scottish:scotland welsh:wales
"""
COUNTRY_FORMS = dict(pair.split(":") for pair in _COUNTRY_TEXT.split())
"""A country by its adjective or another name ("the British prime minister" is "the UK's", "Dutch
law" is "the Netherlands' law"): one name, as "America" and "the US" are ``usa``."""

def _as_country(country: str, low: str, drop: tuple[str, ...], named: bool,
                names: list[str], content: set[str], words: list[str]) -> None:
    """Read the word ``low`` just taken (its stem in ``content``, its form last in ``words``) as the
    name of ``country``: the names in ``drop`` go, and ``country`` is a name when ``named``."""
    content.discard(_stem(low))
    content.discard("unit")
    content.add(_stem(country))
    names[:] = [n for n in names if n not in drop] + ([country] if named else [])
    words[-1] = country


_AMERICA = frozenset({"america", "american", "americans"})
_CONTINENT_PARTS = frozenset({"south", "north", "latin", "central"})
""""America", "American(s)" name the country (``usa``, as "the US" does) unless a part of the continent precedes."""

_TARGET_AFTER = frozenset({"to", "into", "in"})
_YEAR_NUMBER = re.compile(r"\s+(?:1[5-9]|20)\d\d\b")
_YEAR_BEFORE = re.compile(r"\b(?:1[5-9]|20)\d\d(?:\s+\w+)?\s+$")
_RATE_UNITS = frozenset({"d", "wk", "mo", "yr", "h", "min"})
_PER_WORDS = frozenset({"a", "an", "per", "each", "every"})


def _per(before: str, unit_text: str) -> bool:
    """Whether the unit of time ``unit_text`` (after the text ``before``) is a rate: "*daily*", "a *day*",
    "per *week*", "each *year*", but not "how many hours in *a day*" (a conversion)."""
    if unit_text.lower() in ("daily", "weekly", "monthly", "yearly", "annually", "hourly"):
        return True
    previous = before.lower().split()[-2:]
    return bool(previous) and previous[-1] in _PER_WORDS and not (
        len(previous) == 2 and previous[0] in ("in", "of", "to", "into", "than", "for"))


def _unit_roles(lone: list[tuple[int, str]], matches: list[tuple[re.Match[str], str]],
                tokens: list[str], measured: bool = False) -> tuple[str, ...]:
    """Lone units (no number before them) with the role they play in a conversion: the one asked
    for (after "how many", "how much", "the number of", or else after "to", "into", "in") and the
    ones it is asked of. "How many ml in a cup", "a cup is how many ml" and "cup to ml" all ask ml
    of a cup; "how many cups in a ml" asks the reverse. A single lone unit, or units whose roles
    cannot be told, keep their place in the text ("tsp in a tbsp"). A single lone unit beside a
    quantity (``measured``) is the unit asked of when "how many" counts that quantity: "how many
    *quarter cups* are in a tablespoon" asks the reverse of "how many tablespoons are in a quarter cup",
    which is left as it is."""
    at = {m.start(): k for k, (m, _) in enumerate(matches)}
    if len(lone) == 1 and measured:
        k = at.get(lone[0][0], 0)
        counted = any(t in ("many", "much") and tokens[j - 1] == "how" and j + 1 < len(tokens)
                      and (tokens[j + 1] in NUMBER_WORDS or tokens[j + 1][:1].isdigit())
                      for j, t in enumerate(tokens) if j)
        if counted and not (k >= 1 and tokens[k - 1] in ("many", "much")):
            return ("u<" + lone[0][1][2:],)
    if len(lone) < 2:
        return tuple(q for _, q in lone)
    before: list[tuple[str, str, str]] = []
    for start, q in lone:
        k = at.get(start, 0)
        before.append((tokens[k - 1] if k >= 1 else "", tokens[k - 2] if k >= 2 else "", q))
    many = [p1 in ("many", "much") or (p1 == "of" and p2 == "number") for p1, p2, _ in before]
    target = many if any(many) else [p1 in _TARGET_AFTER for p1, _, _ in before]
    if sum(target) == 0 and len(lone) == 2:  # "feet in *a mile*", "bytes per kb": the other is asked
        source = [(p2 in ("in", "per") and p1 in ("a", "an", "one")) or p1 == "per" for p1, p2, _ in before]
        target = [not x for x in source] if sum(source) == 1 else target
    if sum(target) != 1:
        return tuple(q for _, q in lone)
    return tuple(sorted(("u>" if t else "u<") + q[2:] for t, (_, _, q) in zip(target, before, strict=True)))


def _past_determiners(words: tuple[str, ...], j: int) -> int:
    """The index of the first word from ``j`` on that is not a determiner ("from *the* city": the city)."""
    while j < len(words) and words[j] in DETERMINERS:
        j += 1
    return j


def _pointed_at(f: Features) -> list[str]:
    """The words directional words point at ("from *london* to *paris*", "bigger than *x*")."""
    found = []
    for k, w in enumerate(f.words[:-1]):
        if w in DIRECTIONAL and (j := _past_determiners(f.words, k + 1)) < len(f.words):
            found.append(f.words[j])
    return found


def _points_at_name(f: Features) -> bool:
    """Whether a directional word points at a name ("from *Boston*", "than *London*", "beat *France*"): then
    the names' order is the question. "a visa *to* visit Japan" relates nothing."""
    return bool(set(_pointed_at(f)) & set(f.names))


def _names_match(a: Features, b: Features) -> str:
    """'' when every name of each side occurs in the other (in the same order when either
    question relates them: "Paris bigger than London", "from Boston to Denver"); else why not."""
    ordered = _points_at_name(a) or _points_at_name(b)
    for x, y in ((a, b), (b, a)):
        extra = [n for n in y.names if n not in x.words]
        for name in x.soft_names:
            if name not in y.words and extra:
                return f"the name {name!r} is missing in the other, which names {extra[0]!r}"
        position = -1
        for name in x.names:
            if name not in y.words:
                return f"the name {name!r} is missing in the other"
            if ordered:
                try:
                    position = y.words.index(name, position + 1)
                except ValueError:
                    return f"the name {name!r} is out of order in the other"
    return ""


def _joined(x: Features, y: Features) -> set[str]:
    """The stems of one word written as two ("quick sort" / "quicksort", "web site" / "website"):
    both halves in ``x`` and the whole in ``y``; they count as the same word."""
    found: set[str] = set()
    whole_words = set(y.words)
    for first, second in zip(x.words, x.words[1:], strict=False):
        whole = first + second
        if first.isalpha() and second.isalpha() and (whole in whole_words or whole.removesuffix("s") in whole_words
                                                     or whole + "s" in whole_words):
            found.update((_stem(whole), _stem(first), _stem(second)))
    return found


GENERIC_HEADS = frozenset({
    "plant", "plants", "phone", "device", "machine", "computer", "pc", "laptop", "protocol", "protocols", "clause",
    "statement", "command", "keyword", "definition", "meaning", "code", "system", "software", "app", "application",
    "program", "tool", "language", "service", "platform", "file", "folder", "directory", "procedure", "operator",
})
"""Nouns that only name the kind of thing the word before them already is: "tomato *plants*", "an Android
*phone*", "TCP and UDP *protocols*", "the GROUP BY *clause*", "subnet mask *definition*"."""
_GENERIC_HEAD_STEMS = frozenset(_stem(w) for w in GENERIC_HEADS)


def _generic_heads(x: Features, y: Features, only: set[str]) -> set[str]:
    """The words of ``only`` (stems ``x`` has and ``y`` lacks) that are generic heads right after a word
    both have: "how often should I water tomato *plants*" asks what "how often to water tomatoes" does."""
    found = set()
    for stem in only & _GENERIC_HEAD_STEMS:
        k = _at(x, stem)
        if k > 0 and _stem(x.words[k - 1]) in y.content:
            found.add(stem)
    return found


_PRICE_STEMS = frozenset(_stem(w) for w in ("price", "cost", "costs", "fee", "pay"))


def _asks_price_only(x: Features, y: Features, stem: str) -> bool:
    """Whether ``stem``, a price word only ``x`` says, asks a price ``y`` does not ask: "how much does it *cost*
    to get a replacement card" is not "how do I get a replacement card", though "what does a stamp *cost*" is
    "how much is a stamp"."""
    return stem in _PRICE_STEMS and "much" not in y.words and not _PRICE_STEMS & y.content


def _swapped(a: Features, b: Features) -> str:
    """Refuse when each side has content words the other lacks that no listed synonym explains
    ("a string" / "a list", "read mode" / "write mode", "left align" / "center"); words only
    added on one side ("a funny joke") pass."""
    joined = _joined(a, b) | _joined(b, a)
    only_a = {w for w in a.content - b.content - joined if not SYNONYMS.get(w, frozenset()) & b.content}
    only_b = {w for w in b.content - a.content - joined if not SYNONYMS.get(w, frozenset()) & a.content}
    heads_a, heads_b = _generic_heads(a, b, only_a), _generic_heads(b, a, only_b)
    if not (heads_a and heads_b):  # "the log *file*" / "the log *folder*": two kinds, not one named twice
        only_a -= heads_a
        only_b -= heads_b
    if only_a and only_b and _frames_only(only_a, only_b):
        return ""  # "is vinegar *safe* for cleaning floors" / "can I *use* vinegar to clean floors"
    if only_a and only_b:
        return f"words differ: {sorted(only_a)} vs {sorted(only_b)}"
    if len(only_a | only_b) >= 2:  # "GDP" vs "GDP per capita": one side narrows the question
        return f"one side adds {sorted(only_a | only_b)}"
    for x, y, added in ((a, b, only_a), (b, a, only_b)):
        for word in added:
            if why := _narrows(x, y, word):
                return why
            if (word not in _FRAME_STEMS or _asks_price_only(x, y, word)) and not _frame_adjective(x, word):
                k = _at(x, word)
                return f"one side adds {x.words[k] if k >= 0 else word!r}, which is not a word of the question's frame"
    return ""


STRANDED = frozenset({"to", "at", "for", "with", "from", "in", "on", "about", "into", "of", "by"})
"""A preposition ending a question carries its relation: "cook salmon *to*" (the inside) is not
"bake salmon *at*" (the oven)."""


def _stranded(a: Features, b: Features) -> str:
    ends = (a.tail, b.tail)
    if ends[0] != ends[1] and ends[0] in STRANDED and ends[1] in STRANDED:
        return f"ends with {ends[0]!r} vs {ends[1]!r}"
    return ""


def _object_of(words: tuple[str, ...], word: str) -> str:
    k = words.index(word) + 1
    while k < len(words) and words[k] in DETERMINERS:
        k += 1
    return words[k] if k < len(words) else ""


def _opposite(a: Features, b: Features) -> str:
    wa, wb = set(a.words), set(b.words)
    for word in wa - wb:
        for other in OPPOSITES.get(word, ()):
            if other not in wb or other in wa:
                continue
            if word in ("to", "from") and _object_of(a.words, word) != _object_of(b.words, other):
                continue  # "flights *to* paris" / "*from* paris", not "what can I do *to* stop it" / "from scratching"
            return f"opposites: {word!r} vs {other!r}"
    return ""


DETERMINERS = frozenset({"a", "an", "the", "my", "your", "our", "their", "his", "her", "its", "this", "that",
                         "these", "those", "some", "any"})
NARROWING = frozenset({"in", "for", "on", "at", "during", "with", "while", "among", "about", "near", "of"})
"""Prepositions whose phrase, added on one side only, narrows the question to a case ("symptoms of a
migraine *in kids*", "a good credit score *in Canada*", "a joke *about cats*")."""
POSSESSIVES = frozenset({"my", "your", "our", "their", "his", "her"})
AUXILIARIES = frozenset({"do", "does", "did", "can", "could", "should", "would", "will", "shall", "may", "might",
                         "must", "is", "are", "was", "were"})
_PERSONAL = frozenset({"i", "you", "we"})
GENERIC_SUBJECTS = frozenset({"person", "people", "someone", "somebody", "anyone", "everyone", "adult", "adults"})
"""Subjects that mean anyone, so the asker too: "how much water should *a person* drink" asks what
"how much water should *I* drink" does."""


def _at(f: Features, stem: str) -> int:
    """The index in ``f.words`` of the first word whose stem is ``stem``, or -1."""
    return next((k for k, w in enumerate(f.words) if _stem(w) == stem), -1)


def _before(words: tuple[str, ...], k: int) -> str:
    """The word before ``words[k]``, skipping determiners ("in *a* baby")."""
    k -= 1
    while k >= 0 and words[k] in DETERMINERS:
        k -= 1
    return words[k] if k >= 0 else ""


def _narrows(x: Features, y: Features, added: str) -> str:
    """Why one content word ``x`` has and ``y`` lacks makes ``x`` a narrower question, or ''.

    A word passes when it only rephrases or colours ("a *funny* joke", "the *best* way", "the
    *capital* city"); it narrows when it is an arithmetic operation ("square *root* of 12" is not
    "12 squared"), the object of a preposition only ``x`` has ("symptoms of a migraine *in kids*"),
    or a noun after the last word of ``y`` that ends the question ("reset my router *password*",
    "protein in an egg *white*"; but "when does the next eclipse *happen*" is "when is the next
    eclipse": a verb after its subject)."""
    k = _at(x, added)
    if k < 0:
        return ""
    if x.words[k] in ARITHMETIC and not (x.words[k] in ("equal", "equals") and any(h[:2] in ("u:", "u<", "u>", "q:")
                                                                                  for h in x.hard)):
        return f"one side adds the operation {x.words[k]!r}"
    prep = _before(x.words, k)
    if prep in NARROWING and prep not in y.words and x.words[k] not in PRONOUNS:
        return f"one side narrows it with {prep!r} {x.words[k]!r}"
    if (x.words[k] in REFERENT_MODIFIERS and k + 1 < len(x.words) and _stem(x.words[k + 1]) in y.content
            and not x.words[k + 1].endswith("ing")):  # "the right boiling time" only rates it
        return f"one side makes {x.words[k + 1]!r} another thing with {x.words[k]!r}"
    if _inserted(x, y, k) and x.words[k] not in HARMLESS_MODIFIERS and not x.words[k].endswith("ing"):
        return f"one side narrows {x.words[k + 1]!r} with {x.words[k]!r}"
    if (k > 0 and k == len(x.words) - 1 and y.words and x.words[k - 1] == y.words[-1] and not _verb_follows(x)
            and x.words[k] not in SENTENCE_ADVERBS):
        return f"one side extends {y.words[-1]!r} with {x.words[k]!r}"
    return ""


HARMLESS_MODIFIERS = frozenset({
    "funny", "good", "best", "great", "nice", "simple", "quick", "easy", "common", "typical", "usual", "normal",
    "main", "basic", "general", "overall", "current", "exact", "actual", "real", "total", "full", "complete",
    "correct", "proper", "right", "ideal", "recommended", "average", "standard", "short", "brief", "detailed",
    "official", "whole", "entire", "healthy", "safe", "cheap", "fast", "very", "really", "most", "approximate",
})
"""Adjectives that rate or size a noun without making it another thing: inserted before a noun
both sides share, they pass ("a *funny* joke", "the *current* exchange rate")."""


def _inserted(x: Features, y: Features, k: int) -> bool:
    """Whether ``x.words[k]`` is inserted before a word both share, between the two words ``y``
    has side by side ("list all *hidden* files" / "list all files", "make *nitro* cold brew")."""
    if k + 1 >= len(x.words):
        return False
    shared = x.words[k + 1]
    if _stem(shared) not in y.content or shared not in y.words or shared in DIRECTIONAL or shared in NARROWING:
        return False
    j = y.words.index(shared)
    before_x = x.words[k - 1] if k > 0 else ""
    before_y = y.words[j - 1] if j > 0 else ""
    return before_x == before_y


_FRAME_TEXT = """
convert conversion equal equals calculate calculation compute work find figure get give tell name list show share
explain describe suggest recommend translate write say mean meaning define definition
between vs versus difference differ compare comparison
city town country year date time day number count amount sum price cost value rate
best better good great nice right correct proper ideal exact exactly approximate roughly typical normal usual
common general basic main simple quick easy current actual real funny whole full complete overall average
safe okay fine allowed considered expected recommended possible likely needed necessary enough
make makes made cause causes happen happens happened occur occurs use using used need needs hold holds keep
live lives lived perform do does did work works go goes run runs come comes take takes
way ways method steps step instructions command commands procedure process guide tips tip
people person someone somebody human humans artist scientist author writer player team company
length size big large much many high long
now today currently please really actually just also still ever anyway
you than per all most through together away up look looking install installed eat eating drink drinking
"""
FRAME_WORDS = frozenset(_FRAME_TEXT.split())
"""Words one side may add without asking another question: they frame it ("*convert* 10 miles to km"),
say what kind of answer it wants ("which *city*", "in what *year*"), or rate it ("the *best* way").
Any other word added on one side only (a noun, a place, an adjective that picks a kind) refuses:
"symptoms of a migraine *in kids*", "list all *hidden* files", "an egg *white*"."""
_FRAME_STEMS = frozenset(_stem(w) for w in FRAME_WORDS)
_FRAME_CLASS_TEXT = """
safe:may okay:may ok:may fine:may allowed:may acceptable:may alright:may can:may use:may
necessary:must needed:must required:must enough:must need:must
possible:maybe likely:maybe expected:maybe
"""
_SWAPPABLE_TEXT = """
tell explain describe suggest recommend say mean meaning define definition
best better good great nice right correct proper ideal exact exactly approximate roughly typical usual common
general basic main simple quick easy current actual real effective reasonable
safe okay ok fine allowed considered expected recommended possible likely needed necessary enough acceptable alright
use can
way ways method steps step instructions command commands procedure process guide tips tip
now today currently please really actually just also still ever anyway
"""
SWAPPABLE_FRAMES = frozenset(_SWAPPABLE_TEXT.split())
"""Frame words that may differ on both sides ("what's the *best* way" / "what's the *right* way", "is it
*safe*" / "can I *use*"): the ones that only ask, rate or say how. Not the verbs that name the act
("*find*" / "*share* my wifi password", "*make*" / "*use* a VPN"), nor "eat" or "sum", which
``FRAME_WORDS`` lets one side add ("how many calories do I *eat*") but which name another thing when
they replace a word ("after *drinking*" / "after *eating*", the *sum* / the *average*)."""
_SWAPPABLE_STEMS = frozenset(_stem(w) for w in SWAPPABLE_FRAMES)
FRAME_CLASSES = {_stem(w): c for w, c in (pair.split(":") for pair in _FRAME_CLASS_TEXT.split())}
"""Frame words that still say something: whether one may ("is it *safe*", "is it *okay*"), must ("is it
*necessary*") or is likely to. Two questions whose differing words are all frame words ask the same
thing only when both say the same of these or neither does ("can I *use* it" is not "*explain* it")."""


def _frames_only(only_a: set[str], only_b: set[str]) -> bool:
    """Whether the words each side has and the other lacks only frame the question, and say nothing
    the other contradicts ("*safe*" / "*use*" passes, "*safe*" / "*necessary*" does not)."""
    if not (only_a | only_b) <= _SWAPPABLE_STEMS:
        return False
    classes_a = {FRAME_CLASSES[w] for w in only_a if w in FRAME_CLASSES}
    classes_b = {FRAME_CLASSES[w] for w in only_b if w in FRAME_CLASSES}
    return classes_a == classes_b
FRAME_ADJECTIVES = frozenset({"total"})
"""Frame words only as adjectives: "the *total* price" asks for the price, "the *total* of the bill
with a tip" asks for another sum than "the tip on the bill"."""


def _frame_adjective(f: Features, stem: str) -> bool:
    k = _at(f, stem)
    return (k >= 0 and f.words[k] in FRAME_ADJECTIVES and k + 1 < len(f.words)
            and f.words[k + 1] not in STOPWORDS)


SENTENCE_ADVERBS = frozenset({"now", "again", "currently", "nowadays", "exactly", "anyway", "though", "precisely",
                              "approximately", "roughly", "please"})
"""Words that end a question without extending its last noun ("how old is the universe *now*")."""
REFERENT_MODIFIERS = frozenset({
    "vice", "deputy", "assistant", "acting", "former", "ex", "step", "half", "grand", "great", "co", "sub", "junior",
    "senior", "right", "acute", "obtuse", "equilateral", "isosceles", "mini", "micro", "baby", "fake", "imitation",
    "decaf", "diet", "sparkling", "frozen", "dried", "canned", "raw", "whole", "skim", "brown", "white", "red",
    "green", "black", "sweet", "sour", "wild", "electric", "manual", "digital", "analog", "wireless", "portable",
    "smart", "public", "private", "federal", "state", "local", "national", "international", "domestic", "foreign",
    "first", "second", "last", "next", "previous", "early", "late", "used", "second-hand", "refurbished",
})
"""Modifiers that make a noun another thing rather than describe it ("*vice* president", "*right*
triangle", "*brown* rice", "*electric* car"): added on one side before a word both share, they narrow."""
_DO_SUPPORT = frozenset({"do", "does", "did", "can", "could", "will", "would", "should", "may", "might", "must"})


def _verb_follows(f: Features) -> bool:
    """Whether ``f``'s last word is its main verb after an inverted subject ("what symptoms does the flu
    *cause*", "when will the eclipse *happen*"), not a noun ("protein in an egg *white*", "reset
    my router *password*": no auxiliary, or "do *I*" makes the later words objects)."""
    for k, w in enumerate(f.words):
        if w in _DO_SUPPORT:
            return k + 1 < len(f.words) and f.words[k + 1] not in _PERSONAL
    return False


def _subject(f: Features) -> tuple[str, str]:
    """(the first auxiliary or modal verb, the word after it skipping determiners): the question's
    subject ("should *I* walk", "should *my dog* drink")."""
    k = _first_auxiliary(f)
    if k < 0:
        return "", ""
    j = _past_determiners(f.words, k + 1)
    return f.words[k], f.words[j] if j < len(f.words) else ""


def _first_auxiliary(f: Features) -> int:
    """The index in ``f.words`` of the first auxiliary or modal verb, or -1."""
    return next((k for k, w in enumerate(f.words) if w in AUXILIARIES), -1)


def _subject_swapped(a: Features, b: Features) -> str:
    """Refuse "how many steps should *a child* walk" for "... should *I* walk": the same auxiliary,
    a personal pronoun on one side and on the other a noun the first never mentions."""
    (aux_a, sub_a), (aux_b, sub_b) = _subject(a), _subject(b)
    if not aux_a or aux_a != aux_b or sub_a == sub_b:
        return ""
    for (x, sx), (y, sy) in (((a, sub_a), (b, sub_b)), ((b, sub_b), (a, sub_a))):
        if sx in _PERSONAL and sy and sy not in _PERSONAL and sy not in STOPWORDS and sy not in GENERIC_SUBJECTS \
                and _stem(sy) in y.content and _stem(sy) not in x.content:
            return f"the subject differs: {sx!r} vs {sy!r}"
    return ""


def _anchors_in_order(a: Features, b: Features) -> str:
    """The words right after a directional word ("from *london* to *paris*", "bigger than *x*")
    that both sides mention come in the same order in both: lowercase names are names too."""
    anchored = {w for f in (a, b) for w in _pointed_at(f) if w not in STOPWORDS}
    shared = anchored & set(a.words) & set(b.words)
    if len(shared) >= 2:
        order_a = sorted(shared, key=a.words.index)
        order_b = sorted(shared, key=b.words.index)
        if order_a != order_b:
            return f"{order_a} are in another order in the other"
    return ""


SIDE_MARKERS = (("instead", "of"), ("rather", "than"), ("in", "place", "of"), ("than",), ("vs",), ("versus",))
"""Words that put two things on two sides ("baking soda *instead of* baking powder"): what follows
the marker must be the same thing in both questions, or one asks the reverse of the other."""


def _after_marker(words: tuple[str, ...], marker: tuple[str, ...]) -> frozenset[str] | None:
    """The stems of the words right after ``marker`` (determiners skipped, up to the next stopword),
    or None when ``words`` do not have it."""
    n = len(marker)
    for k in range(len(words) - n + 1):
        if words[k:k + n] == marker:
            j = k + n
            while j < len(words) and words[j] in DETERMINERS:
                j += 1
            run: list[str] = []
            while j < len(words) and words[j] not in STOPWORDS:
                run.append(_stem(words[j]))
                j += 1
            return frozenset(run)
    return None


def _sides_swapped(a: Features, b: Features) -> str:
    """Refuse when both questions have a side marker and what follows it differs ("use baking
    powder instead of *baking soda*" / "use baking soda instead of *baking powder*")."""
    for marker in SIDE_MARKERS:
        ra, rb = _after_marker(a.words, marker), _after_marker(b.words, marker)
        if ra is not None and rb is not None and ra and rb and ra != rb:
            return f"{sorted(ra ^ rb)[0]!r} is on the other side of {' '.join(marker)!r} in the other"
    return ""


_CONDITION = re.compile(r"\b(when|if)\b", re.IGNORECASE)


def _condition_words(text: str) -> set[str] | None:
    """The words of a question's condition clause ("what time is it in Tokyo *when it's 9am in New
    York*", "*if I leave at noon*, when do I arrive"), or None without one."""
    m = _CONDITION.search(text)
    if m is None:
        return None
    if _starts_sentence(text, m.start()):
        clause = text[m.start():].split(",", 1)[0] if "," in text[m.start():] else ""
    else:
        clause = text[m.start():].split(",", 1)[0]
    return {_fold(w.group(0)) for w in _WORD.finditer(clause)} if clause else None


def _condition_names(question: str, candidate: str, a: Features, b: Features) -> str:
    """Refuse when both questions have a condition clause and its names differ ("time in *Tokyo*
    when it's 9am in *New York*" is not "time in *New York* when it's 9am in *Tokyo*")."""
    ca, cb = _condition_words(question), _condition_words(candidate)
    if ca is None or cb is None:
        return ""
    na = {n for n in a.names if n in ca or (n == "usa" and ca & {"us", "usa", "states", *_AMERICA})}
    nb = {n for n in b.names if n in cb or (n == "usa" and cb & {"us", "usa", "states", *_AMERICA})}
    if na != nb:
        return f"the condition names {sorted(na) or 'nothing'} vs {sorted(nb) or 'nothing'}"
    return ""


_MARKED = re.compile(r"`([^`\n]{1,200})`|\"([^\"\n]{1,200})\"|(?<![\w])'([^'\n]{1,200})'(?![\w])")


MAX_MARKED = 8
MAX_UNQUOTED_TEXT = 2000
"""``_unquoted`` looks for at most this many quoted spans, in texts of at most this many characters
(``MAX_SEMANTIC_CHARS``): each span is searched for in the other text, so this bounds its work."""


def _unquoted(text: str, other: str) -> str:
    """``text`` without the quotes or backticks around what ``other`` says unquoted, word for word:
    "what does fold in mean" asks what "what does 'fold in' mean" does. (Both keep their case: a quoted
    regex '\\d+' is not \\D+.)"""
    marked = _MARKED.findall(text, 0, MAX_UNQUOTED_TEXT)
    if not marked or len(marked) > MAX_MARKED or len(other) > MAX_UNQUOTED_TEXT:
        return text  # a question quotes a few things; more is not a question this check is for

    def plain(m: re.Match[str]) -> str:
        body = next(g for g in m.groups() if g)
        found = re.search(r"(?<![\w'`\"])" + re.escape(body) + r"(?![\w'`\"])", other,
                          0 if not _PLAIN_WORDS.fullmatch(body) else re.IGNORECASE)
        return body if found else m.group(0)
    return _MARKED.sub(plain, text) if len(text) <= MAX_UNQUOTED_TEXT else text


_REQUEST_VERBS = frozenset({"explain", "tell", "describe", "show", "give", "list", "help", "recommend", "suggest",
                            "define", "share", "name"})
_DEFINE_VERBS = frozenset({"explain", "describe", "define"})
_HOW_TO_SUBJECTS = frozenset({"i", "we", "you", "one"})
_HOW_TO_NOUNS = frozenset({"way", "ways", "steps", "step", "process", "procedure", "instructions"})


_TENSES = {"is": "present", "are": "present", "am": "present", "do": "present", "does": "present",
           "was": "past", "were": "past", "did": "past"}


def _tense(f: Features) -> str:
    """The tense of a question's first auxiliary ("who *is* the president", "who *was* the president"),
    or '' (none, another, or a passive)."""
    k = _first_auxiliary(f)
    if k < 0 or (k + 1 < len(f.words) and (f.words[k + 1] in IRREGULAR or f.words[k + 1].endswith("ed"))):
        return ""  # a passive ("was *written* by whom") tells of an event, not of a state that changed
    return _TENSES.get(f.words[k], "")


def _dated(f: Features) -> bool:
    """Whether a year, a date word or a relative date fixes the time a question is about: then "who was
    the president in 1970" and "who is the president in 1970" ask the same."""
    return any(h.startswith("t:") or (h.startswith("n:") and len(h) == 6 and h[2:].isdigit()) for h in f.hard)


def _form(f: Features) -> str:
    """The form of answer a question asks for when it says so: "yes-no" ("*do I need* a visa for Japan",
    "*can I* freeze rice"), "how-to" ("*how do I* get a visa", "the best *way to*", "*how to*") or
    "an explanation" ("*explain* git rebase"); '' when its words do not say (a telegraphic "japan visa",
    "what is the speed limit"). Two questions whose forms are said and differ ask different things:
    "how do I get a visa for Japan" is not "do I need a visa for Japan"."""
    w = f.words
    if not w:
        return ""
    how_to = any((t == "how" and k + 1 < len(w) and (w[k + 1] == "to" or (
        w[k + 1] in AUXILIARIES and k + 2 < len(w) and w[k + 2] in _HOW_TO_SUBJECTS)))
        or (t in _HOW_TO_NOUNS and k + 1 < len(w) and w[k + 1] in ("to", "for"))
        for k, t in enumerate(w))
    if how_to:
        return "how-to"
    request = w[0] in AUXILIARIES and len(w) > 2 and w[1] == "you" and w[2] in _REQUEST_VERBS
    if w[0] in _DEFINE_VERBS or (request and w[2] in _DEFINE_VERBS):
        return "an explanation"
    if w[0] in AUXILIARIES and not request and not any(t in _WH for t in w) and "possible" not in w:
        return "yes-no"
    return ""


def refuse(question: str, candidate: str) -> str:
    """Why ``candidate`` (a cached question) must not answer ``question``; '' when the guard accepts it."""
    a, b = features(question), features(candidate)
    if a.hard != b.hard:
        plain_q, plain_c = _unquoted(question, candidate), _unquoted(candidate, question)
        if plain_q != question or plain_c != candidate:
            a, b = features(plain_q), features(plain_c)
    if a.hard != b.hard:
        return f"salient tokens differ: {list(a.hard)} vs {list(b.hard)}"
    if a.negated != b.negated:
        return "one negates, the other does not"
    if a.asks != b.asks:
        return f"asks {sorted(a.asks) or 'what'} vs {sorted(b.asks) or 'what'}"
    if a.duration and b.duration and a.duration != b.duration:
        return f"asks how long in {a.duration!r} vs {b.duration!r}"
    tense_a, tense_b = _tense(a), _tense(b)
    if tense_a and tense_b and tense_a != tense_b and not _dated(a) and not _dated(b):
        return f"one asks about the {tense_a}, the other about the {tense_b}"
    form_a, form_b = _form(a), _form(b)
    if form_a and form_b and form_a != form_b:
        return f"one asks {form_a}, the other {form_b}"
    return (_names_match(a, b) or _anchors_in_order(a, b) or _sides_swapped(a, b)
            or _condition_names(question, candidate, a, b) or _subject_swapped(a, b) or _stranded(a, b)
            or _opposite(a, b) or _swapped(a, b))

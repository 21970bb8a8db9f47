"""The semantic cache's precision guard and index, without processes (the guard needs no model)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from llmlab_grpc.cache.entry import EntryMeta
from llmlab_grpc.cache.manager import CacheManager, EntryExtras
from llmlab_grpc.cache.semantic.embedder import BusyElsewhere, Embedder, auto_threads, normalise
from llmlab_grpc.cache.semantic.guard import features, refuse
from llmlab_grpc.cache.semantic.index import SemanticIndex, row_bytes, scope_of, signature
from llmlab_grpc.cache.stores import MemoryStore
from llmlab_grpc.planner.workflow import replay_pieces, semantic_parts
from llmlab_grpc.proto.llmlab.v1 import common_pb2


@pytest.mark.parametrize(("cached", "asked"), [
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("What is the capital of France?", "Which city is France's capital?"),
    ("Tell me a joke", "Tell me a funny joke"),
    ("What is 25 times 67?", "Calculate 25 times 67."),
    ("How many kilometers are in 10 miles?", "10 miles is how many kilometers?"),
    ("Explain how photosynthesis works.", "How does photosynthesis work?"),
    ("Translate 'good morning' into Spanish.", "How do you say 'good morning' in Spanish?"),
    ("What does `git rebase` do?", "Explain what `git rebase` does."),
    ("How do I make pancakes without eggs?", "How can I make pancakes without eggs?"),
    ("Who is the CEO of Microsoft?", "Who is Microsoft's CEO?"),
    ("Is Paris bigger than London?", "Is Paris larger than London?"),
    # canonical forms: a question word said another way, an irregular past, "one" as an article
    ("When did World War II end?", "In what year did World War II end?"),
    ("Who painted the Mona Lisa?", "Which artist painted the Mona Lisa?"),
    ("Why is the sky blue?", "How come the sky is blue?"),
    ("Why is the sky blue?", "What makes the sky blue?"),
    ("When was the Eiffel Tower built?", "When did they build the Eiffel Tower?"),
    ("How many calories are in a banana?", "How many calories are there in one banana?"),
    ("How do I make a cup of tea?", "What's the best way to make a cup of tea?"),
    ("What is 25 times 67?", "What is twenty five times 67?"),
    ("What is 25 times 67?", "What is twenty-five times sixty-seven?"),
    ("What is 205 plus 1?", "What is two hundred and five plus one?"),
    ("How do I bake bread?", "Give me a way of baking bread."),
    ("Tell me a joke about cats.", "Well, tell me a joke about cats."),
    ("Is coffee bad for your heart?", "Is coffee bad for the heart?"),
])
def test_paraphrases_pass_the_guard(cached: str, asked: str) -> None:
    assert refuse(asked, cached) == ""


@pytest.mark.parametrize(("cached", "asked", "why"), [
    ("What is 25 times 67?", "What is 25 times 68?", "salient"),
    ("What is 25 times 67?", "What is twenty six times 67?", "salient"),
    ("Is it safe to drink tap water in Mexico?", "Is it safe to drink well water in Mexico?", "words differ"),
    ("Is chocolate good for you?", "Is chocolate good for dogs?", "words differ"),
    ("What is 25 times 67?", "What is twenty times 67?", "salient"),
    ("What is 205 plus 1?", "What is two hundred and fifty plus 1?", "salient"),
    ("What is the capital of France?", "What is the capital of Germany?", "name"),
    ("Is Paris bigger than London?", "Is London bigger than Paris?", "order"),
    ("Is Paris bigger than London?", "Is Paris smaller than London?", "opposites"),
    ("How do I make pancakes without eggs?", "How do I make pancakes with eggs?", "negates"),
    ("Can dogs eat chocolate?", "Why can't dogs eat chocolate?", "negates"),
    ("How many kilometers are in 10 miles?", "How many meters are in 10 miles?", "salient"),
    ("What was the weather like yesterday in Boston?", "What will the weather be like tomorrow in Boston?",
     "salient"),
    ("Translate 'good morning' into Spanish.", "Translate 'good night' into Spanish.", "salient"),
    ("Convert 100 Fahrenheit to Celsius.", "Convert 100 Celsius to Fahrenheit.", "salient"),
    ("What is 67 minus 25?", "What is 25 minus 67?", "salient"),
    ("Paris is bigger than London.", "Berlin is bigger than London.", "words differ"),
    ("Paris is bigger than London.", "Is Berlin bigger than London?", "name"),
    ("What does `git rebase` do?", "What does `git merge` do?", "salient"),
    ("What is the title of https://example.com/about?", "What is the title of https://example.com/contact?",
     "salient"),
    ("Recipe for pancakes", "Recipe for waffles", "words differ"),
    ("Population of Japan in 2020", "Population of Japan in 2010", "salient"),
    ("How do I reverse a list in Python?", "How do I reverse a string in Python?", "words differ"),
    ("What is the GDP of Brazil in 2022?", "What is the GDP per capita of Brazil in 2022?", "adds"),
    ("How do I boil pasta?", "How long should I boil pasta?", "asks"),
    ("When was the Eiffel Tower built?", "Where was the Eiffel Tower built?", "asks"),
    ("In what year did it end?", "On what day did it end?", "words differ"),
    ("What is one plus two?", "What is two?", "salient"),
    ("Tell me about one of the planets.", "Tell me about the planets.", "salient"),
    ("How many calories are in one banana?", "How many calories are in 2 bananas?", "salient"),
])
def test_near_misses_are_refused_with_a_reason(cached: str, asked: str, why: str) -> None:
    assert why in refuse(asked, cached)


@pytest.mark.parametrize(("cached", "asked"), [
    ("How many ml in a cup?", "A cup is how many ml?"),  # a unit's role, not its place, in a conversion
    ("How many ml in a cup?", "cup to ml?"),
    ("How long should I boil pasta?", "How many minutes should pasta boil?"),  # a duration asked in a unit
    ("What is 25 times 67?", "What do you get when you multiply 25 by 67?"),  # a "when" clause is no question word
    ("How do I remove a file in Linux?", "How can I delete a file in Linux?"),  # synonyms
    ("How do I enable dark mode?", "How do I turn on dark mode?"),  # a phrasal verb is one verb
    ("How many ounces are in a pound?", "How many ounces make up one pound?"),  # ... or only frames the question
    ("Is it going to rain in Seattle tomorrow?", "Is rain expected in Seattle tomorrow?"),  # "going to" is will
    ("How many legs does an octopus have?", "How many legs do octopuses have?"),  # a singular in -us
    ("What is the difference between a virus and a bacterium?", "How do viruses differ from bacteria?"),  # plural
    ("Who composed the Four Seasons?", "Four Seasons composer?"),  # a bare kind noun asks who
    ("Should I pay off debt or invest?", "Pay off debt first or invest?"),  # an ordinal as an adverb
    ("What is the time complexity of quicksort?", "Time complexity of quick sort?"),  # one word written as two
    ("is 100 degrees fahrenheit a fever", "Does 100°F count as a fever?"),  # degrees and ° join a number and unit
    ("what's 7 percent sales tax on $250", "7% sales tax on 250 dollars?"),  # % and $ are units
    ("how much is a first class stamp in the uk", "price of a 1st class stamp uk"),  # 1st is first
    ("what year did the roman empire fall", "when did the roman empire fall"),  # "fall" here is no season
    ("how long is the flight from new york to london", "new york to london flight duration"),  # duration
    ("when did the first iphone come out", "what year was the first iphone released"),  # come out = release
    ("how do i stop my cat from scratching the couch", "What can I do to stop my cat scratching the couch?"),
    ("When will the next solar eclipse happen?", "When is the next solar eclipse?"),  # a verb after its subject
    ("what is the half life of carbon 14", "carbon 14 half life?"),  # "half" of a term, no 0.5
    ("how do i fix a leaky faucet", "my faucet is leaking, how do i fix it"),  # leaky and leaking: one stem
    ("how many tbsp in 1/4 cup", "tablespoons in a quarter cup?"),  # 1/4 is a quarter
    ("what's the interest on a 200k mortgage", "What's the interest on a 200,000 mortgage?"),  # 200k
    ("how do i get a stain out of a white shirt", "how to remove a stain from a white shirt"),  # get ... out
    ("do i need to refrigerate ketchup once it is open", "is it necessary to refrigerate ketchup once it is open"),
    ("how do i remove a stripped screw", "stripped screw removal?"),  # -al nouns
    ("can i take melatonin every night", "can i take melatonin nightly"),  # nightly
    ("Convert 5 kilograms to pounds.", "What is 5 kilograms in pounds?"),  # "convert" only frames the question
    ("how long do you cook a 12 pound turkey", "How long should a 12-pound turkey cook?"),  # 12-pound
    ("how do i convert mp4 to mp3", "How can I turn an MP4 into an MP3?"),  # turn into = convert
    ("what's the best budget gaming laptop", "top cheap gaming laptop?"),  # synonyms
    ("What is the capital of Australia?", "Which city is Australia's capital?"),  # "city" says the kind of answer
])
def test_paraphrases_the_new_rules_accept(cached: str, asked: str) -> None:
    assert refuse(asked, cached) == ""


@pytest.mark.parametrize(("cached", "asked", "why"), [
    ("how many ml in a cup", "how many cups in a ml", "salient"),  # the roles of two units swapped
    ("what's the cheapest way to get from london to paris", "what's the cheapest way to get from paris to london",
     "another order"),  # lowercase names after "from" and "to"
    ("what is a good credit score", "what is a good credit score in canada", "narrows"),  # an added "in" phrase
    ("how do i reset my router", "how do i reset my router password", "extends"),  # an owned noun extended
    ("what is 12 squared", "what is the square root of 12", "operation"),  # an added arithmetic operation
    ("how many steps a day should i walk", "how many steps a day should a child walk", "subject"),  # I vs a child
    ("how do i turn on dark mode on android", "how do i turn off dark mode on android", "opposites"),  # phrasal
    ("How many hours of sleep does a teenager need?", "How many minutes of sleep does a teenager need?",
     "how long in"),  # a duration asked in another unit
    ("what's the weather going to be in chicago this weekend", "what was the weather in chicago last weekend",
     "salient"),  # "last" before a date word
    ("Can I fly when I'm pregnant?", "Can I fly after I'm pregnant?", "salient"),  # "after" is salient
    ("Do you know when the Titanic sank?", "Do you know why the Titanic sank?", "asks"),  # an embedded "when" asks
    ("Who was the first president?", "Who was the second president?", "salient"),  # an ordinal that counts
    ("What is the GDP of Brazil?", "What is the GDP per capita of Brazil?", "adds"),  # "gdp"+"per" is no word
    ("who was the president of the us in 1970", "who was the president of mexico in 1970", "usa"),  # "the us"
    ("what temperature should i cook salmon to", "what temperature should i bake salmon at", "ends with"),
    ("how do i stop my cat from scratching the couch", "how do i stop my cat from scratching me", "words differ"),
    ("how do i find the area of a triangle", "how do i find the area of a right triangle", "another thing"),
    ("who was the president of the us in 1970", "who was the vice president of the us in 1970", "another thing"),
    ("how many grams of protein in an egg", "how many grams of protein in an egg white", "extends"),
    ("Are there direct flights to Paris?", "Are there direct flights from Paris?", "opposites"),
    ("convert 90 degrees to radians", "convert 90 radians to degrees", "salient"),
    ("What is 25 times 67?", "What is 25 times 67 in the fall?", "salient"),  # "in the fall" is the season
    ("how do i list all files in a directory", "how do i list all hidden files in a directory", "narrows"),
    ("How do I bake chocolate chip cookies?", "How do I bake chocolate chip muffins?", "words differ"),  # no "cook"
    ("do i need a passport to go to canada from the us", "do i need a passport to go to the us from canada",
     "another order"),  # "the us" anchors a direction
    ("How much flour is in a cup?", "How much flour is in half a cup?", "salient"),  # "half a" counts
    ("how do i say thank you in japanese", "how do i say sorry in japanese", "words differ"),  # what is said counts
    ("how many tbsp in 1/4 cup", "how many tbsp in 1/3 cup", "salient"),  # fractions are numbers
    ("How can I get out of vim?", "How can I get the cat out of vim?", "words differ"),  # exit vs remove
    ("Take this pill once a day.", "Take this pill twice a day.", "salient"),  # "once a" counts
    ("how long does a cold last", "how long is a cold contagious", "frame"),  # an added word asks another thing
    ("how long does a cold last", "how long does a cold sore last", "frame"),
    # the spent third held-out split's three wrong hits, each by a general rule
    ("What's a 20% tip on an $85 bill?", "What's the total of an $85 bill with a 20% tip?", "frame"),
    ("Can I use baking soda instead of baking powder?", "Can I use baking powder instead of baking soda?",
     "other side of 'instead of'"),
    ("What time is it in Tokyo when it's 9am in New York?", "What time is it in New York when it's 9am in Tokyo?",
     "condition names"),
    ("Is coffee healthier than tea?", "Is tea healthier than coffee?", "another order"),
    ("Who was the first president of the United States?", "Who was the first president of Mexico?", "name"),
])
def test_near_misses_the_new_rules_refuse(cached: str, asked: str, why: str) -> None:
    assert why in refuse(asked, cached)


@pytest.mark.parametrize(("cached", "asked"), [
    ("Who was the first president of the United States?", "who was the first US president"),
    ("who was the president of the us in 1970", "Who was the American president in 1970?"),
    ("What is the total price of 3 apples at 2 dollars each?", "What do 3 apples at 2 dollars each cost in total?"),
    ("Can I use baking soda instead of baking powder?", "baking soda instead of baking powder: can I use it?"),
    ("whats the difference between let and const in javascript", "let vs const in JS?"),
    ("how do i merge two dictionaries in python", "python: how can I merge two dicts?"),
])
def test_the_country_by_any_name_and_sides_kept_pass(cached: str, asked: str) -> None:
    assert refuse(asked, cached) == ""


@pytest.mark.parametrize(("cached", "asked", "why"), [
    # the wrong hits of the fourth to sixth held-out splits, each refused by a general rule
    ("What does the Python regex '\\d+' match?", "What does the Python regex '\\D+' match?", "salient"),
    ("What is 17% of 340?", "340 is 17% of what number?", "salient"),
    ("How many tablespoons are in a quarter cup?", "How many quarter cups are in a tablespoon?", "salient"),
    ("What is the tallest mountain in Africa?", "How tall is the tallest mountain in Africa?", "asks"),
    ("How do I rename a file in the Linux terminal?", "How do I rename many files at once in the Linux terminal?",
     "salient"),
    ("How do I delete a file in git?", "How do I delete multiple files in git?", "salient"),
    ("How old is the universe?", "How big is the universe?", "asks"),
    # what the normalisations above must still tell apart
    ("How many hours are in a day?", "How many days are in an hour?", "salient"),
    ("How much water should I drink a day?", "How much water should I drink a week?", "salient"),
    ("How much water should I drink a day?", "How much water should a child drink a day?", "subject"),
    ("How long should I boil an egg?", "When should I boil an egg?", "asks"),
    ("Can you tell me when the museum opens?", "Can you tell me where the museum is?", "asks"),
    ("What is the opening time of the Louvre?", "What is the closing time of the Louvre?", "differ"),
    ("Who was the British prime minister during the Suez Crisis?",
     "Who was the French prime minister during the Suez Crisis?", "name"),
    ("Is it safe to drink coffee while pregnant?", "Is it safe to drink coffee while not pregnant?", "negates"),
    ("How do I unclog a sink without chemicals?", "How do I unclog a sink with chemicals?", "negates"),
    ("Who was the first president of the USA?", "Who were the first 2 presidents of the USA?", "salient"),
    ("What does the Python regex '\\d+' match?", "What does the Python regex \\D+ match?", "salient"),
    ("How do I factory reset an Android phone?", "How do I factory reset an Android tablet?", "tablet"),
    ("How do I reset my router?", "How do I reset my router password?", "password"),
    ("How do I delete the log file?", "How do I delete the log folder?", "differ"),
    # the form of answer, when both questions say it
    ("How do I get a visa for Japan?", "Do I need a visa for Japan?", "yes-no"),
    ("How do I use git rebase?", "Explain git rebase.", "explanation"),
    ("Can I freeze cooked rice?", "How do I freeze cooked rice?", "how-to"),
    ("Who is the president of France?", "Who was the president of France?", "past"),
    ("When does the store open?", "When did the store open?", "past"),
    ("How do I get from Boston to Denver?", "How do I get from Denver to Boston?", "order"),
    ("How many feet are in a mile?", "miles in a foot", "salient"),
    ("Is it safe to eat raw eggs?", "Is it necessary to eat raw eggs?", "differ"),
    ("How do I find my wifi password?", "How do I share my wifi password?", "differ"),
    ("What is a normal resting heart rate?", "What is a high resting heart rate?", "differ"),
    ("How do I find the average of a column in SQL?", "How do I find the sum of a column in SQL?", "differ"),
    ("Is it safe to swim after eating?", "Is it safe to swim after drinking?", "differ"),
    # the wrong hit of the blind split FRESH6, read after its measurement
    ("How do I get a replacement Social Security card?",
     "How much does it cost to get a replacement Social Security card?", "cost"),
])
def test_near_misses_round_six_refuses(cached: str, asked: str, why: str) -> None:
    assert why in refuse(asked, cached)


@pytest.mark.parametrize(("cached", "asked"), [
    ("How tall is the Eiffel Tower?", "What is the height of the Eiffel Tower?"),
    ("How far is the Moon from the Earth?", "What's the distance between the Moon and the Earth?"),
    ("What is the population of Tokyo?", "How large is the population of Tokyo?"),
    ("How many kilometers are in 10 miles?", "Convert 10 miles into kilometers: how many?"),
    ("Convert 20 euros to dollars.", "How much is 20 euros in dollars?"),
    ("What does the word 'Serendipity' mean?", "What does the word 'serendipity' mean?"),
    ("How do I rename multiple files in Linux?", "How do I rename several files in Linux?"),
    # one way of writing what has several
    ("How do I connect my printer to Wi-Fi?", "How do I connect my printer to wifi?"),
    ("What's the difference between a Roth IRA and a traditional IRA?",
     "What's the difference between Roth and traditional IRAs?"),
    ("Who was the British prime minister during the Suez Crisis?",
     "Who was the UK prime minister during the Suez Crisis?"),
    ("What is the largest ocean on Earth?", "What is the largest ocean in the world?"),
    ("If a car travels 60 miles per hour, how far does it go in 2 hours?",
     "If a car travels 60 mph, how far does it go in 2 hours?"),
    ("What is the penalty for a 401k withdrawal before age 59 1/2?",
     "What is the penalty for a 401k withdrawal before age 59\u00bd?"),
    ("How many tablespoons are in a quarter cup?", "How many tablespoons are in a quarter of a cup?"),
    ("Convert 180 degrees Celsius to Fahrenheit.", "Convert 180 C to F."),
    ("How do I unclog a sink without chemicals?", "How do I unclog a sink chemical-free?"),
    ("How do I select the top 10 rows in SQL Server?", "How do I select the first 10 rows in SQL Server?"),
    ("Is it safe to drink coffee while pregnant?", "Is it safe to drink coffee while pregnant or not?"),
    # a clause's when and where, a rate, a generic subject, a time that asks how long or when
    ("What's the best way to deal with jet lag when flying east?",
     "What's the best way to deal with jet lag flying east?"),
    ("How do I select rows where a column is NULL in SQL?", "How can I select rows where a column is NULL in SQL?"),
    ("How many calories should I eat a day?", "How many calories should I eat daily?"),
    ("How much water should I drink a day?", "How much water should a person drink a day?"),
    ("How long should I boil an egg?", "What's the boiling time for an egg?"),
    ("What time does the stock market open?", "stock market opening time?"),
    ("How many kilometers is a marathon?", "How long is a marathon in kilometers?"),
    # quotes are optional markup; a generic head after a word both say
    ("What does 'fold in' mean in a baking recipe?", "what does fold in mean in a baking recipe"),
    ("What does `git reset --soft HEAD~1` do?", "what does git reset --soft HEAD~1 do"),
    ("How often should I water tomato plants?", "how often to water tomatoes"),
    ("How do I factory reset an Android phone?", "How do I factory reset an Android?"),
    # frame words that differ on both sides, the order of names nothing relates, a conversion's "in a"
    ("Is it safe to eat raw cookie dough?", "Is raw cookie dough okay to eat?"),
    ("What's the best way to learn Spanish?", "What's the right way to learn Spanish?"),
    ("Can I use vinegar to clean hardwood floors?", "Is vinegar safe for cleaning hardwood floors?"),
    ("Do I need a visa to visit Japan with a US passport?", "With a US passport, do I need a visa to visit Japan?"),
    ("How many feet are in a mile?", "feet in a mile"),
    ("When is the tax filing deadline for 2024?", "2024 tax filing deadline?"),
    ("When should I plant tulip bulbs?", "best time to plant tulip bulbs"),
    ("How many liters are in 5 US gallons?", "How many liters does 5 US gallons equal?"),
    ("What is the speed of light in a vacuum?", "speed of light in a vacuum"),
    ("how much is a first class stamp in the uk", "What does a first class stamp cost in the UK?"),
    ("How do I make pancakes?", "Can you tell me how to make pancakes?"),
    ("How do I recover deleted files?", "Is there a way to recover deleted files?"),
    ("How does photosynthesis work?", "Explain how photosynthesis works."),
    ("What does git rebase do?", "Could you explain what git rebase does?"),
    ("Who was the president of the US in 1970?", "Who is the president of the US in 1970?"),
    ("Who is the author of Pride and Prejudice?", "Pride and Prejudice was written by whom?"),
    ("How do I remove the last element from a list in Python?", "How do I remove the last item from a list in Python?"),
])
def test_paraphrases_round_six_accepts(cached: str, asked: str) -> None:
    assert refuse(asked, cached) == ""


def test_features_normalise_numbers_and_units() -> None:
    assert features("It costs 1,000 dollars").hard == features("It costs 1000 USD").hard
    assert features("five apples").hard == features("5 apples").hard
    assert features("2.50 euros").hard == features("2.5 euro").hard
    assert features("I'm here").hard == ()  # "m" after an apostrophe is no unit


def test_the_guards_memory_of_texts_is_bounded() -> None:
    from llmlab_grpc.cache.semantic import guard
    for i in range(guard.FEATURES_MEMO_ENTRIES + 300):
        features(f"How many legs does spider number {i} have?")
    assert len(guard._MEMO) == guard.FEATURES_MEMO_ENTRIES
    long = "How far " + "is it to the big city " * 90
    before = len(guard._MEMO._kept)
    assert features(long) == features(long)
    assert long not in guard._MEMO._kept and len(guard._MEMO._kept) == before  # ~30 kB: read again each time
    assert guard._features_bytes(long) > guard.FEATURES_MEMO_ENTRY_BYTES


def test_the_guard_is_linear_on_hostile_input() -> None:
    hostile = "'" + "a' '" * 4000 + "`" * 3000 + "1," * 3000 + "http://" * 500
    assert isinstance(refuse(hostile, hostile[::-1]), str)
    # quoted spans the other side may say unquoted, clauses after a question word, rates, year labels
    quoted = "'a' " * 2000
    assert refuse(quoted, quoted.replace("'", "")).startswith("salient")
    clauses = "x " * 5000 + "when where " * 2000 + "a day per week tax year 2024 " * 500
    assert isinstance(refuse(clauses, clauses[::-1]), str)


def meta(key: str, vector: np.ndarray, namespace: str = "", context: str = "", model: str = "m") -> EntryMeta:
    return EntryMeta(key=key, prompt=key, model=model, params={"temperature": 0.0}, created_unix_ms=0,
                     expires_unix_ms=1, hits=0, size_bytes=1, checksum="", namespace=namespace,
                     context_hash=context, semantic_text=key, embedding=vector.astype(np.float32).tobytes())


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


def test_index_partitions_by_scope_and_follows_removals() -> None:
    index = SemanticIndex()
    for i in range(40):
        assert index.add(meta(f"k{i}", unit(i)))
    assert index.add(meta("other-ns", unit(5), namespace="a"))
    assert index.add(meta("other-turns", unit(5), context="abc"))
    assert not index.add(meta("broken", np.full(384, np.nan)))
    assert not index.add(meta("short", np.ones(10)))
    assert not index.add(EntryMeta(**{**meta("long", unit(7)).__dict__, "semantic_text": "Why? " * 1000}))
    scope = scope_of("", "m", {"temperature": 0.0}, "")
    best = index.search(scope, unit(5), k=3)
    assert best[0].key == "k5" and best[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert [n.key for n in index.search(scope_of("a", "m", {"temperature": 0.0}, ""), unit(5))] == ["other-ns"]
    index.remove("k5")
    assert all(n.key != "k5" for n in index.search(scope, unit(5), k=40))
    for i in range(40):
        index.remove(f"k{i}")
    assert index.search(scope, unit(1)) == [] and len(index) == 2


def test_semantic_parts_hash_the_earlier_turns() -> None:
    user = common_pb2.ChatMessage(role="user", content="What is its capital?")
    france = [common_pb2.ChatMessage(role="user", content="Talk about France."),
              common_pb2.ChatMessage(role="assistant", content="Sure.")]
    germany = [common_pb2.ChatMessage(role="user", content="Talk about Germany."),
               common_pb2.ChatMessage(role="assistant", content="Sure.")]
    assert semantic_parts([user]) == ("What is its capital?", "")
    a, b = semantic_parts([*france, user]), semantic_parts([*germany, user])
    assert a[0] == b[0] == "What is its capital?" and a[1] != b[1] and len(a[1]) == 64
    assert semantic_parts(france) == ("", "")  # ends with the assistant: no question
    assert semantic_parts([common_pb2.ChatMessage(role="tool", content="42")]) == ("", "")


def test_replay_pieces_are_word_aligned_and_whole() -> None:
    text = "Paris is the capital of France.\n\nIt has  about 2 million people. "
    pieces = replay_pieces(text)
    assert "".join(pieces) == text and len(pieces) == 12
    assert all(len(p.split()) == 1 for p in pieces)  # one whole word each, never a split one
    long = " ".join(f"w{i}" for i in range(2000))
    assert "".join(replay_pieces(long)) == long and len(replay_pieces(long)) <= 256
    assert replay_pieces("") == [] and replay_pieces("   ") == ["   "]


def test_index_rows_count_against_the_cache_budget() -> None:
    """The index's copy of each vector (issue 16's rule: every stored byte counts) is in the
    entry's bytes, so a full cache's index is bounded by the same budget."""
    plain = CacheManager(MemoryStore(), max_bytes=1 << 30)
    indexed = CacheManager(MemoryStore(), max_bytes=1 << 30)
    indexed.index = SemanticIndex()
    extras = EntryExtras(semantic_text="q", embedding=unit(1).tobytes())
    assert (indexed.put("q", "m", "a", {"temperature": 0.0}, extras=extras).stored_bytes
            - plain.put("q", "m", "a", {"temperature": 0.0}, extras=extras).stored_bytes) == row_bytes()
    assert row_bytes() >= 384 * 4

    budget = 200 * 1024
    small = CacheManager(MemoryStore(), max_bytes=budget)
    small.index = SemanticIndex()
    for i in range(400):
        small.put(f"question {i}", "m", "answer", {"temperature": 0.0},
                  extras=EntryExtras(semantic_text=f"question {i}", embedding=unit(i).tobytes()))
    stats = small.get_stats()
    assert stats["bytes"] <= budget
    assert len(small.index) == stats["entries"] < 400  # evicted entries left the index
    assert stats["entries"] * row_bytes() <= budget


def test_row_bytes_cover_what_the_index_holds() -> None:
    vectors = [unit(i) for i in range(1024)]  # capacity doubles from 8: exactly full at 1024
    metas = [meta(f"{i:064x}", vectors[i]) for i in range(1024)]  # hex keys: nearly every signature differs
    for m in metas:
        features(m.semantic_text)  # the guard's own cache (bounded: 4,096 texts) is not the index's
    tracemalloc.start()
    try:
        index = SemanticIndex()
        before = tracemalloc.take_snapshot()
        for m in metas:
            index.add(m)
        grown = sum(d.size_diff for d in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert 1024 * 384 * 4 < grown <= 1024 * row_bytes()


def test_a_question_no_entry_could_match_is_not_searched() -> None:
    """Rows carry the guard's signature (salient tokens, negation, kind of answer): a question
    whose signature no entry of its scope has cannot hit, so the lookup skips the embedding."""
    index = SemanticIndex()
    for i, text in enumerate(["What is 25 times 67?", "Why is the sky blue?", "Why is the sky not blue?"]):
        entry = meta(f"k{i}", unit(i))
        index.add(EntryMeta(**{**entry.__dict__, "semantic_text": text}))
    scope = scope_of("", "m", {"temperature": 0.0}, "")
    assert index.has_scope(scope, signature("What's 25 times 67?"))
    assert not index.has_scope(scope, signature("What is 25 times 68?"))
    for question, key in (("How come the sky is blue?", "k1"), ("Why isn't the sky blue?", "k2")):
        assert [n.key for n in index.search(scope, unit(1), k=3, signature=signature(question))] == [key]
    assert len(index.search(scope, unit(1), k=3, floor=-1.0)) == 3  # listing candidates: the whole scope
    index.remove("k0")
    assert not index.has_scope(scope, signature("What is 25 times 67?"))


def test_embedding_threads_follow_the_idle_cores() -> None:
    """threads=0: every core the 1-minute load average leaves idle (at most 4), else one; more
    threads than idle cores made one question several times slower under load (docs/cache.md)."""
    assert auto_threads(cores=2, load=0.2) == 2
    assert auto_threads(cores=2, load=0.7) == 1
    assert auto_threads(cores=2, load=12.0) == 1
    assert auto_threads(cores=16, load=2.0) == 4
    fixed = Embedder(threads=3)
    auto = Embedder(threads=0)
    try:
        assert fixed.team_size() == 3
        assert auto.team_size() == 1  # one thread is measured first
        for _ in range(3):
            auto.note_time(False, 0.0140, tokens=14)  # 1 ms a token on one thread
        auto.note_team_time(0.0070, tokens=14)  # 0.5 ms a token: a team on idle cores
        assert auto._solo_until == 0.0
        auto.note_team_time(0.150, tokens=14)  # one stalled question (a garbage collection): the team stays
        assert auto._solo_until == 0.0
        auto.note_team_time(0.150, tokens=14)  # two in a row: a core was busy, one thread for the next minute
        assert auto.team_size() == 1
        auto._solo_until = 0.0
        for _ in range(3):  # a team no faster than one thread (0.95 ms a token): one thread again
            auto.note_team_time(0.0133, tokens=14)
        assert auto._solo_until > 0.0 and auto.team_size() == 1
    finally:
        fixed.close()
        auto.close()


def test_threads_follow_what_other_processes_use_not_the_embedding_itself() -> None:
    """The machine's busy time minus this process's own: back-to-back questions on one thread
    (this process busy 1 core) leave the second core idle, and get it."""
    readings = iter([(100.0, 10.0, 0.0), (101.0, 11.0, 1.0), (101.1, 11.1, 1.1), (103.2, 11.4, 2.0)])
    busy = BusyElsewhere(read=lambda: next(readings))
    assert busy.cores() == 0.0  # the machine's 1 s of work was all this process's
    assert auto_threads(cores=2, load=0.0) == 2
    assert busy.cores() == 0.0  # 0.1 s: too short a window for 10 ms ticks, the last reading stands
    # since the last reading kept (1.0 s): 2.2 s busy, 0.4 s of it ours: others use 1.8 cores
    assert busy.cores() == pytest.approx(1.8)
    assert auto_threads(cores=2, load=1.8) == 1
    assert BusyElsewhere(read=lambda: None).cores() is None  # no /proc/stat: the load average decides


def test_questions_are_embedded_in_a_normal_form() -> None:
    assert normalise("What\u2019s  the CEO's NAME?\n I can't tell.") == "what is the ceo's name? i cannot tell."

"""Writes the shipped prompt files; the text files are committed, this script only documents how they were made.

Run ``python -m components.tokenizers.make_prompts``: a fixed seed and fixed word lists give the same files every time.
"""

from __future__ import annotations

import argparse
import random
from itertools import accumulate
from pathlib import Path


def _choices(block: str) -> tuple[str, ...]:
    """Word lists are written as "|"-separated text so they stay compact and readable."""
    return tuple(" ".join(item.split()) for item in block.split("|"))


SUBJECTS = _choices(
    """
    a red fox | an old fisherman | a lighthouse | a golden retriever | a tabby cat | two kittens | a young woman
    with freckles | an elderly man with a white beard | a samurai | a medieval knight | a steam locomotive | a
    vintage car | a sailboat | a hot air balloon | a dragon | a phoenix | an astronaut | a robot | a cyborg | a
    wizard | a witch | a ballerina | a jazz musician | a street vendor | a barista | a chef | a farmer | a child
    holding a balloon | a grandmother knitting | a husky | a snow leopard | a barn owl | a hummingbird | a koi fish
    | a sea turtle | a humpback whale | a jellyfish | an octopus | a chameleon | a tiger | a lion | an elephant | a
    giraffe | a panda | a red panda | a hedgehog | a rabbit | a deer | a wolf | a bear | a horse | a unicorn | a
    castle | a cathedral | a temple | a pagoda | a windmill | a treehouse | a cottage | a skyscraper | a bridge | a
    train station | a greenhouse | a library | a bookshop | a bakery | a café | a bowl of ramen | a cup of coffee |
    a slice of cake | a crème brûlée | a plate of sushi | a jalapeño pizza | a glass of red wine | a basket of
    apples | a vase of sunflowers | a bonsai tree | a cherry blossom tree | an oak tree | a cactus | a mushroom | a
    crystal | a pocket watch | a typewriter | a guitar | a violin | a piano | a camera | a teapot | a lantern | a
    compass | a map | a sword | a shield | a crown | a mask | a piñata | a paper boat | a kite | a motorcycle | a
    bicycle | a tram | a submarine | a spaceship | a space station | a satellite | a fairy | a mermaid | a centaur |
    a golem | a ghost | a vampire | a pirate | a detective | a scientist | a soldier | a monk | a nun | a queen | a
    king | a princess | a prince | a dancer | a skateboarder | a surfer | a climber | a runner | a painter | a
    sculptor | a naïve folk-art village | a fiancée in a lace dress | a dog | a cat | a bird | a boy | a girl |
    three ducks | five apples | a pair of boots | a stack of books | a field of lavender
    """
)

ACTIONS = _choices(
    """
    standing | sitting | walking | running | sleeping | reading a book | drinking tea | playing chess | looking at
    the camera | looking away | laughing | dancing in the rain | flying | swimming | floating | hiding | waiting |
    smiling | crying | singing | painting | fishing | cooking | mending nets | holding an umbrella | riding a
    bicycle | climbing | jumping | resting | made of glass | made of wood | made of paper | made of gold | covered
    in moss | covered in snow | on fire | glowing | melting | half-submerged | in mid-air | in a jar
    """
)

SETTINGS = _choices(
    """
    in a misty forest | on a rocky beach | in a busy market | on a rainy street | in a quiet library | in a neon-lit
    alley | on a mountain top | in a desert | under the sea | in outer space | on the moon | on Mars | in a snowy
    village | in a wheat field | in a flower garden | in a bamboo forest | by a frozen lake | on a pier at dawn | in
    a cozy kitchen | in an abandoned factory | in a Victorian parlor | in a cyberpunk city | in a fantasy kingdom |
    in a post-apocalyptic wasteland | in Zürich | in Reykjavík | in Kraków | in São Paulo | in Málaga | in Tokyo |
    in Paris | in New York | in Venice | in Marrakesh | in the Swiss Alps | in the Sahara | in the Arctic | in a
    Parisian café | in front of a baroque façade | at a smörgåsbord | on a rooftop | in a subway car | in a
    greenhouse | in a cave | in a canyon | by a waterfall | in a swamp | in a jungle | on a sunflower field | at the
    edge of a cliff | inside a cathedral | in a museum | in a classroom | in a laboratory | in a diner | on a train
    | on a boat | at a carnival | at a wedding | in the 1920s | in the 1980s | in ancient Rome | in feudal Japan |
    in the year 3000
    """
)

STYLES = _choices(
    """
    oil painting | watercolor | ink drawing | charcoal sketch | pencil sketch | digital art | concept art | matte
    painting | 3D render | octane render | unreal engine | low poly | pixel art | anime style | studio ghibli style
    | manga | comic book style | ukiyo-e | art nouveau | art deco | bauhaus poster | impressionism | expressionism |
    cubism | surrealism | pop art | baroque | renaissance painting | gothic | steampunk | cyberpunk | vaporwave |
    synthwave | minimalist | flat illustration | vector art | isometric | claymation | papercut | stained glass |
    mosaic | tapestry | linocut | woodblock print | double exposure | tilt-shift | film noir | polaroid |
    daguerreotype | cinematic still | fashion photography | street photography | documentary photography | macro
    photography | wildlife photography | architectural photography | food photography | portrait photography | long
    exposure | infrared photography
    """
)

LIGHTING = _choices(
    """
    golden hour | blue hour | soft light | hard light | rim light | backlit | volumetric lighting | god rays |
    dramatic lighting | studio lighting | natural light | candlelight | neon lights | moonlight | overcast | foggy |
    harsh midday sun | sunset | sunrise | twilight | chiaroscuro | bioluminescent glow | firelight | warm tones |
    cool tones | high contrast | low key | high key | split lighting | Rembrandt lighting
    """
)

CAMERA = _choices(
    """
    35mm | 50mm | 85mm f/1.4 | 24mm wide angle | 200mm telephoto | macro lens | fisheye lens | shallow depth of
    field | bokeh | f/2.8 | f/8 | ISO 400 | ISO 3200 | 1/250s | 1/4000s | shot on Kodak Portra 400 | shot on
    Fujifilm | shot on Leica M6 | shot on Hasselblad | Canon EOS R5 | Sony A7 III | Nikon D850 | drone shot | aerial
    view | close-up | extreme close-up | wide shot | medium shot | full-body shot | low angle | high angle | dutch
    angle | over-the-shoulder | top-down view | side view | front view | 35mm film grain | anamorphic lens | motion
    blur
    """
)

QUALITY = _choices(
    """
    4k | 8k | highly detailed | ultra-detailed | sharp focus | masterpiece | best quality | award-winning | trending
    on artstation | photorealistic | hyperrealistic | intricate details | HDR | RAW photo | 16:9 | 3:2 aspect ratio
    | high resolution | UHD | crisp | clean lines
    """
)

MOODS = _choices(
    """
    melancholic | serene | whimsical | eerie | joyful | nostalgic | mysterious | epic | dreamy | gloomy | peaceful |
    chaotic | romantic | tense | playful | ominous | hopeful | cozy | lonely | majestic
    """
)

COLORS = _choices(
    """
    red | blue | green | yellow | orange | purple | pink | teal | turquoise | crimson | emerald | amber | ivory |
    charcoal | pastel | muted | vibrant | monochrome | sepia | black-and-white | gold | silver | copper | indigo |
    magenta
    """
)

DETAILS = _choices(
    """
    with a red scarf | wearing a straw hat | with glowing eyes | with long silver hair | holding a lantern | with a
    tiny crown | wearing a leather jacket | with paint-stained hands | with 3 candles | with 12 balloons | next to a
    1967 Mustang | beside a naïve mural | with a résumé in hand | with déjà vu written on the wall | under a café
    awning | wearing round glasses | with a scar on the cheek | with butterflies around | with falling leaves | with
    snowflakes | with raindrops on the window | with reflections in puddles | with a rainbow | with smoke rising |
    with sparks flying | with cherry petals drifting | with an old map
    """
)

SENTENCE_OPENERS = _choices(
    """
    A photograph of | A painting of | An illustration of | A portrait of | A close-up photo of | A cinematic shot of
    | A detailed drawing of | A dreamlike scene of | Concept art of | A poster of | A postcard showing | An
    award-winning photo of | A children's book illustration of | A still life of
    """
)

CLOSERS = _choices(
    """
    The air feels {mood}. | Everything is bathed in {light}. | The palette is {color} and {color2}. | Shot with a
    {camera} look. | It looks like a scene from an old film. | Nothing else is in the frame. | The background is
    blurred. | Fine textures, {quality}. | Inspired by {style}.
    """
)


def _pick(rng: random.Random, items: tuple[str, ...], k: int) -> list[str]:
    return rng.sample(items, k)


def _tag_prompt(rng: random.Random) -> str:
    """Comma-separated tag style, as typed into most image generators."""
    parts = [f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)}", rng.choice(SETTINGS)]
    parts += _pick(rng, STYLES, rng.randint(1, 2)) + _pick(rng, LIGHTING, rng.randint(1, 2))
    parts += _pick(rng, CAMERA, rng.randint(0, 3)) + _pick(rng, QUALITY, rng.randint(1, 3))
    if rng.random() < 0.4:
        parts.insert(1, rng.choice(DETAILS))
    if rng.random() < 0.3:
        parts.append(f"{rng.choice(COLORS)} color palette")
    return ", ".join(parts)


def _sentence_prompt(rng: random.Random) -> str:
    """Natural-language style: one or more sentences."""
    first = f"{rng.choice(SENTENCE_OPENERS)} {rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(SETTINGS)}"
    if rng.random() < 0.5:
        first += f" {rng.choice(DETAILS)}"
    first += f", {rng.choice(LIGHTING)}."
    sentences = [first]
    for template in _pick(rng, CLOSERS, rng.randint(0, 3)):
        colors = _pick(rng, COLORS, 2)
        sentences.append(
            template.format(
                mood=rng.choice(MOODS),
                light=rng.choice(LIGHTING),
                color=colors[0],
                color2=colors[1],
                camera=rng.choice(CAMERA),
                quality=rng.choice(QUALITY),
                style=rng.choice(STYLES),
            )
        )
    return " ".join(sentences)


def _long_prompt(rng: random.Random) -> str:
    """A few long, detailed prompts so truncation paths get exercised."""
    return " ".join([_sentence_prompt(rng), _sentence_prompt(rng), _tag_prompt(rng)])


def _short_prompt(rng: random.Random) -> str:
    mood, color, style = rng.choice(MOODS), rng.choice(COLORS), rng.choice(STYLES)
    return f"{mood} {color} {style} of {rng.choice(SUBJECTS)} {rng.choice(SETTINGS)}"


def generate_prompts(count: int, seed: int) -> list[str]:
    """Unique prompts in generation order; the mix of styles is fixed by the seed."""
    rng = random.Random(seed)
    seen: set[str] = set()
    prompts: list[str] = []
    makers = ((_tag_prompt, 0.45), (_sentence_prompt, 0.37), (_short_prompt, 0.12), (_long_prompt, 0.06))
    thresholds = list(zip((make for make, _ in makers), accumulate(weight for _, weight in makers), strict=True))
    while len(prompts) < count:
        roll = rng.random()
        maker = next((make for make, upper in thresholds if roll < upper), thresholds[-1][0])
        prompt = maker(rng)
        if prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    return prompts


def write_prompt_files(out_dir: Path, n_train: int = 600, n_eval: int = 80, seed: int = 20240611) -> None:
    """Train and eval files are disjoint because they are slices of one de-duplicated list."""
    prompts = generate_prompts(n_train + n_eval, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train.txt").write_text("\n".join(prompts[:n_train]) + "\n", encoding="utf-8")
    (out_dir / "eval.txt").write_text("\n".join(prompts[n_train:]) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("data/prompts"))
    args = parser.parse_args(argv)
    write_prompt_files(args.out)


if __name__ == "__main__":
    main()

"""Word lists for the synthetic world (lrm.data.synthetic): names, title words, brands.

Fixed lists, so generated names are readable and deterministic. The taxonomy is a curated
8 x 5 x 5 tree; worlds with a wider or deeper topic tree fall back to generated names.
"""

from __future__ import annotations

# Top level -> second level -> leaves. Every name is unique across the whole tree.
TAXONOMY: tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
    ("Outdoor", (
        ("Camping", ("Tents", "Sleeping Bags", "Camp Stoves", "Lanterns", "Camp Chairs")),
        ("Hiking", ("Backpacks", "Hiking Boots", "Trekking Poles", "Water Filters",
                    "Trail Maps")),
        ("Fishing", ("Fishing Rods", "Fishing Reels", "Lures", "Tackle Boxes", "Fishing Line")),
        ("Cycling", ("Bike Helmets", "Bike Lights", "Saddles", "Bike Pumps", "Cycling Gloves")),
        ("Climbing", ("Harnesses", "Carabiners", "Climbing Ropes", "Chalk Bags",
                      "Belay Devices")),
    )),
    ("Kitchen", (
        ("Cookware", ("Frying Pans", "Saucepans", "Dutch Ovens", "Woks", "Stock Pots")),
        ("Bakeware", ("Baking Sheets", "Cake Pans", "Muffin Tins", "Rolling Pins",
                      "Cooling Racks")),
        ("Cutlery", ("Chef Knives", "Paring Knives", "Knife Blocks", "Knife Sharpeners",
                     "Cutting Boards")),
        ("Small Appliances", ("Blenders", "Toasters", "Kettles", "Coffee Makers",
                              "Rice Cookers")),
        ("Tableware", ("Dinner Plates", "Bowls", "Glassware", "Mugs", "Serving Platters")),
    )),
    ("Beauty", (
        ("Skincare", ("Moisturizers", "Cleansers", "Serums", "Sunscreens", "Face Masks")),
        ("Makeup", ("Lipsticks", "Foundations", "Mascaras", "Eyeshadows", "Blushes")),
        ("Hair Care", ("Shampoos", "Conditioners", "Hair Oils", "Hair Dryers", "Hair Brushes")),
        ("Nails", ("Nail Polish", "Nail Files", "Cuticle Care", "Nail Art", "Polish Removers")),
        ("Fragrance", ("Perfumes", "Colognes", "Body Mists", "Roll-On Oils", "Fragrance Sets")),
    )),
    ("Electronics", (
        ("Audio", ("Headphones", "Earbuds", "Speakers", "Soundbars", "Turntables")),
        ("Computing", ("Laptops", "Keyboards", "Mice", "Monitors", "Webcams")),
        ("Phones", ("Phone Cases", "Chargers", "Screen Protectors", "Power Banks",
                    "Phone Mounts")),
        ("Cameras", ("Digital Cameras", "Lenses", "Tripods", "Camera Bags", "Memory Cards")),
        ("Gaming", ("Game Controllers", "Gaming Headsets", "Gaming Chairs", "Consoles",
                    "Racing Wheels")),
    )),
    ("Home", (
        ("Furniture", ("Sofas", "Bookshelves", "Desks", "Armchairs", "Coffee Tables")),
        ("Bedding", ("Pillows", "Duvets", "Bed Sheets", "Mattress Toppers", "Blankets")),
        ("Lighting", ("Floor Lamps", "Desk Lamps", "Ceiling Lights", "String Lights",
                      "Light Bulbs")),
        ("Decor", ("Wall Art", "Vases", "Mirrors", "Rugs", "Candles")),
        ("Storage", ("Storage Bins", "Shoe Racks", "Closet Organizers", "Laundry Baskets",
                     "Drawer Dividers")),
    )),
    ("Sports", (
        ("Fitness", ("Dumbbells", "Yoga Mats", "Resistance Bands", "Kettlebells", "Jump Ropes")),
        ("Running", ("Running Shoes", "Running Shorts", "Sports Watches", "Hydration Vests",
                     "Compression Socks")),
        ("Team Sports", ("Soccer Balls", "Basketballs", "Shin Guards", "Baseball Gloves",
                         "Volleyballs")),
        ("Racket Sports", ("Tennis Rackets", "Tennis Balls", "Badminton Sets",
                           "Pickleball Paddles", "Table Tennis Bats")),
        ("Swimming", ("Swim Goggles", "Swimsuits", "Swim Caps", "Kickboards", "Swim Fins")),
    )),
    ("Toys", (
        ("Building", ("Building Blocks", "Model Kits", "Marble Runs", "Magnetic Tiles",
                      "Construction Sets")),
        ("Games", ("Board Games", "Card Games", "Jigsaw Puzzles", "Dice Games",
                   "Strategy Games")),
        ("Dolls", ("Fashion Dolls", "Dollhouses", "Action Figures", "Plush Toys", "Puppets")),
        ("Outdoor Play", ("Kites", "Water Guns", "Scooters", "Sandbox Toys",
                          "Bubble Machines")),
        ("Learning", ("Science Kits", "Flash Cards", "Globes", "Coding Robots",
                      "Musical Toys")),
    )),
    ("Garden", (
        ("Garden Tools", ("Pruners", "Trowels", "Garden Gloves", "Watering Cans",
                          "Garden Hoses")),
        ("Plants", ("Seeds", "Flower Bulbs", "Houseplants", "Succulents", "Herb Kits")),
        ("Patio", ("Patio Chairs", "Hammocks", "Parasols", "Garden Benches", "Fire Pits")),
        ("Lawn Care", ("Lawn Mowers", "Fertilizers", "Leaf Blowers", "Sprinklers", "Edgers")),
        ("Wildlife", ("Bird Feeders", "Bird Houses", "Bee Hotels", "Bird Baths",
                      "Squirrel Baffles")),
    )),
)

# Names for topics beyond the curated tree: "<adjective> <noun>", made unique.
FALLBACK_ADJECTIVES = (
    "Amber", "Arctic", "Azure", "Bold", "Bright", "Cedar", "Coastal", "Copper", "Crimson",
    "Desert", "Golden", "Granite", "Harbor", "Hidden", "Iron", "Ivory", "Jade", "Lunar",
    "Maple", "Meadow", "Misty", "Noble", "Northern", "Ocean", "Onyx", "Pine", "Prairie",
    "Quiet", "Royal", "Rustic", "Sage", "Silver", "Solar", "Spruce", "Stone", "Summit",
    "Swift", "Timber", "Urban", "Velvet", "Willow", "Wild",
)
FALLBACK_NOUNS = (
    "Accents", "Basics", "Classics", "Collection", "Craft", "Essentials", "Finds", "Gear",
    "Goods", "Kits", "Line", "Market", "Outfitters", "Picks", "Range", "Selection", "Series",
    "Shop", "Staples", "Studio", "Supplies", "Tools", "Treasures", "Wares", "Works",
)

# Descriptive words handed out to topics as their title vocabulary (each topic gets a few;
# words are reused across topics only once the pool is spent).
DESCRIPTORS = tuple("""
absorbent acoustic adaptive adjustable aerated airtight alpine aluminum ambient anodized
antique aromatic artisan assorted atomic balanced bamboo beaded beveled biodegradable
blackout bonded braided breathable brushed buffered cashmere carbon ceramic chiseled chrome
circular clamped clip coated cobalt coiled collapsible compact contoured convertible cordless
corrugated cotton cozy cushioned curved dense detachable digital dimmable double dual
durable embossed enamel ergonomic etched expandable faceted felted fitted flared fleece
flexible floral fluted foldable forged frosted gilded glazed glossy gradient graphite
hammered handcrafted heated heavy hexagonal hinged hollow hybrid insulated interlocking
jacquard jointed keyed knitted lacquered laminated layered leather lightweight linen
lockable looped luminous magnetic marbled matte mesh metallic micro mineral modular
molded mounted natural nested nonstick oiled organic oval padded panoramic patterned
pearl perforated pivoting plated pleated pocket polished porcelain portable powered
precision pressed quilted radiant recycled reflective reinforced removable reversible
ribbed rigid riveted rotating rounded rubber rugged satin sculpted sealed seamless
shielded silicone sleek sliding slim smart smoked soft solid spiral sprung stackable
stainless steel stitched stretch striped sturdy suede swivel tactile tapered telescopic
tempered textured thermal tinted titanium toughened translucent triple tufted turbo
twisted ultralight vented velour vintage waterproof waxed weighted welded wicker wide
wireless woven zippered anchor arc beacon birch blaze bloom breeze canyon cascade cinder
cliff cloud comet coral crest dawn delta drift dune echo ember fern fjord flint forest
frost glacier grove harvest haven horizon island juniper lagoon ledge lotus
marsh mesa mist monsoon moss nova oasis orbit orchard pebble peak pinnacle prism quartz
rapids reef ridge river rover savanna shadow shore sierra spark spire spring storm
strata summit tide trail tundra valley vista wave willow zenith acorn almond anise
basil berry cacao caramel cinnamon citrus clove cocoa fig ginger honey lavender lemon
lime mango maple mint nutmeg olive peach pepper plum rose saffron sesame tea vanilla
walnut apex axis bolt cadence cipher core crux dynamo element flux forge fusion gamma
helix ion kinetic matrix nexus optic pulse quantum radius sigma sonic spectrum
stratus tempo vector velocity vertex volt alder aspen banyan cypress hawthorn hemlock
larch linden magnolia oak redwood sequoia sycamore teak yew agate basalt beryl garnet
jasper obsidian opal onyx ruby sapphire slate topaz tourmaline falcon heron kestrel lark
osprey raven robin sparrow swallow wren badger bison fox lynx otter puma stag wolf
""".split())

GENERIC_WORDS = (
    "New", "Premium", "Classic", "Original", "Deluxe", "Pro", "Edition", "Series", "Set",
    "Essentials", "Plus", "Max", "Lite", "Value", "Select", "Signature", "Everyday", "Ultra",
    "Home", "Travel", "Gift", "Bundle", "Standard", "Advanced",
)

COLORS = ("Black", "White", "Red", "Blue", "Green", "Grey", "Navy", "Beige", "Pink", "Olive",
          "Teal", "Silver", "Brown", "Purple", "Yellow", "Orange")
SIZES = ("XS", "S", "M", "L", "XL", "XXL")

# Brand names are made of two or three of these syllables ("Nor" + "vex", "Ka" + "lo" + "ra").
BRAND_ONSETS = (
    "Nor", "Ka", "Ve", "Lu", "Tri", "Zen", "Ar", "Bel", "Cor", "Dra", "El", "Fen", "Gal",
    "Hal", "Ix", "Jor", "Kel", "Lor", "Mar", "Nex", "Or", "Pax", "Quin", "Ro", "Sol", "Tor",
    "Ul", "Vor", "Wex", "Yar", "Av", "Bri", "Cal", "Dun", "Er", "Fal", "Gri", "Hex",
)
BRAND_MIDDLES = ("a", "e", "i", "o", "u", "la", "ri", "no", "ve", "ta", "mi", "do")
BRAND_CODAS = (
    "vex", "ora", "ion", "ix", "ant", "ela", "ton", "ara", "eo", "ium", "ex", "is", "on",
    "ar", "yn", "ek", "ia", "us", "ent", "ic",
)

"""Ten hand-written (anchor, paraphrase, unrelated) triples for the embedding quality check: the paraphrase
says the same thing in other words; the unrelated sentence shares no topic with the anchor."""

TRIPLES: list[tuple[str, str, str]] = [
    ("The cat is sleeping on the sofa.", "A cat naps on the couch.",
     "Interest rates rose by half a percent this quarter."),
    ("How do I reset my password?", "What are the steps to change my forgotten password?",
     "The volcano erupted early on Tuesday morning."),
    ("It is raining heavily outside today.", "There is a lot of rain falling outdoors right now.",
     "She plays the violin in the city orchestra."),
    ("The train to Paris leaves at nine in the morning.", "The 9 a.m. train departs for Paris.",
     "Photosynthesis converts light into chemical energy."),
    ("I am very hungry and want to eat dinner.", "I'm starving and would like to have supper.",
     "The server rack needs a new power supply."),
    ("The football match was cancelled because of snow.", "Snow caused the soccer game to be called off.",
     "He bought a new laptop for his programming course."),
    ("Water boils at one hundred degrees Celsius.", "At 100 °C, water starts to boil.",
     "My grandmother knits warm scarves every winter."),
    ("The robot arm picks up the red box.", "The red box is grabbed by the robotic arm.",
     "Tourists enjoy the beaches of southern Spain."),
    ("Please turn off the lights in the kitchen.", "Switch off the kitchen lights, please.",
     "The stock market closed higher on Friday."),
    ("The doctor said I should rest for a week.", "My physician told me to take a week off to recover.",
     "Ancient Egyptians built pyramids as tombs."),
]

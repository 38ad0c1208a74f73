"""First names for the synthetic world's users, so explanations can say who ("Priya, your friend, goes here").

Drawn from their own random stream per city (`WorldConfig.rng(city, "names")`): adding names left
every other column of the world bit for bit as it was, and the same seed gives the same names.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recsys_core.synthetic.config import WorldConfig

# A mix of the eight cities' common first names; repeats across users are expected, as in life.
FIRST_NAMES = (
    "Priya", "Oliver", "Amelia", "Jack", "Aisha", "Harry", "Sofia", "Mohammed", "Emily", "Noah",
    "Lena", "Jonas", "Mia", "Luca", "Anna", "Felix", "Hannah", "Elias", "Lea", "Paul",
    "Ines", "Tiago", "Beatriz", "Duarte", "Lucia", "Pau", "Martina", "Hugo", "Julia", "Marc",
    "Tereza", "Jakub", "Eliska", "Tomas", "Adela", "Matyas", "Chloe", "Liam", "Florence", "Gabriel",
    "Olivia", "William", "Charlotte", "Lucas", "Isla", "Henry", "Zoe", "Kai", "Mei", "Arjun",
    "Yuki", "Omar", "Fatima", "Mateo", "Nina", "Samuel", "Ava", "Leo", "Maya", "Ethan",
    "Nora", "Ravi", "Sara", "Daniel",
)  # fmt: skip
if len(set(FIRST_NAMES)) != len(FIRST_NAMES):  # an import-time check, as the taxonomy's
    raise ValueError("FIRST_NAMES has duplicates")


def user_names(config: WorldConfig, city_id: int, n: int) -> pa.Array[pa.StringScalar]:
    """One first name per user of the city, from the city's own "names" stream."""
    rng = config.rng(city_id, "names")
    picks = rng.integers(0, len(FIRST_NAMES), size=n)
    return pa.array(np.asarray(FIRST_NAMES, dtype=object)[picks].tolist(), pa.string())

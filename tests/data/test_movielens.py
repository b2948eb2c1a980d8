"""MovieLens readers (ML-100k, ML-1M, ML-25M CSV, RecBole atomic) on files written here."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from lrm.core.errors import DataError
from lrm.data.movielens import read_movielens, read_recbole_atomic, split_title_year

# user, item, rating, timestamp in file order: users out of order; user 1's items 2 and 3 share
# a timestamp (file order 2, 3); user 3's items 2 and 1 too (file order 2, 1).
RATINGS = [(3, 2, 4, 100), (1, 1, 5, 300), (1, 2, 3, 200), (1, 3, 4, 200), (2, 3, 1, 50),
           (3, 1, 2, 100)]
EXPECTED_USERS = [1, 2, 3]
EXPECTED_ITEMS = [[2, 3, 1], [3], [2, 1]]
EXPECTED_RATINGS = [3, 4, 5, 1, 4, 2]
EXPECTED_TIMES = [200, 200, 300, 50, 100, 100]


def _flags(*genres: str) -> str:
  from lrm.data.movielens import ML100K_GENRES
  return "|".join("1" if g in genres else "0" for g in ML100K_GENRES)


def _write_ml100k(folder: pathlib.Path) -> pathlib.Path:
  folder.mkdir(exist_ok=True)
  (folder / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in RATINGS))
  url = "http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)"
  toy_genres = _flags("Animation", "Children's", "Comedy")
  lines = [
      f"1|Toy Story (1995)|01-Jan-1995||{url}|{toy_genres}",
      f"2|Misérables, Les (1995)|01-Jan-1995||{url}|{_flags('Drama', 'Musical')}",
      f"3|unknown||||{_flags('unknown')}",
      f"4|Nameless Film|01-Jan-1998||{url}|{_flags('Film-Noir', 'Sci-Fi')}",
  ]
  (folder / "u.item").write_bytes("".join(l + "\n" for l in lines).encode("latin-1"))
  return folder


def _write_ml1m(folder: pathlib.Path) -> pathlib.Path:
  folder.mkdir(exist_ok=True)
  (folder / "ratings.dat").write_text("".join("::".join(map(str, r)) + "\n" for r in RATINGS))
  movies = ("1::Toy Story (1995)::Animation|Children's|Comedy\n"
            "2::Misérables, Les (1995)::Drama|Musical\n"
            "3::City of Lost Children, The (Cité des enfants perdus, La) (1995)"
            "::Adventure|Sci-Fi\n"
            "4::Nameless Film::(no genres listed)\n")
  (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
  return folder


def _assert_events(dataset):
  seqs = dataset.sequences
  np.testing.assert_array_equal(seqs.user_ids, EXPECTED_USERS)
  assert [s.tolist() for s in seqs] == EXPECTED_ITEMS
  np.testing.assert_array_equal(seqs.signals["rating"], EXPECTED_RATINGS)
  np.testing.assert_array_equal(seqs.timestamps, EXPECTED_TIMES)


def test_ml100k(tmp_path):
  dataset = read_movielens(_write_ml100k(tmp_path / "ml-100k"))
  assert dataset.name == "ml-100k"
  _assert_events(dataset)
  np.testing.assert_array_equal(dataset.catalog.item_ids, [1, 2, 3, 4])
  assert dataset.catalog.fields == {
      "title": ["Toy Story", "Misérables, Les", None, "Nameless Film"],
      "release_year": [1995, 1995, None, 1998],  # 1998 from the release date
      "genres": [["Animation", "Children's", "Comedy"], ["Drama", "Musical"], [],
                 ["Film-Noir", "Sci-Fi"]],
  }


def test_ml1m(tmp_path):
  dataset = read_movielens(_write_ml1m(tmp_path / "ml-1m"))
  _assert_events(dataset)
  assert dataset.catalog.fields == {
      "title": ["Toy Story", "Misérables, Les",
                "City of Lost Children, The (Cité des enfants perdus, La)", "Nameless Film"],
      "release_year": [1995, 1995, 1995, None],
      "genres": [["Animation", "Children's", "Comedy"], ["Drama", "Musical"],
                 ["Adventure", "Sci-Fi"], []],
  }


def test_ml25m_csv(tmp_path):
  (tmp_path / "ratings.csv").write_text(
      "userId,movieId,rating,timestamp\n" + "".join(",".join(map(str, r)) + "\n" for r in RATINGS))
  (tmp_path / "movies.csv").write_text(
      'movieId,title,genres\n1,Toy Story (1995),Animation|Children\'s|Comedy\n'
      '2,"Misérables, Les (1995)",Drama|Musical\n3,Heat (1995),Action\n'
      '4,Film,(no genres listed)\n',
      encoding="utf-8")
  dataset = read_movielens(tmp_path)
  _assert_events(dataset)
  assert dataset.catalog.fields["title"] == ["Toy Story", "Misérables, Les", "Heat", "Film"]
  assert dataset.catalog.fields["genres"][3] == []


def test_recbole_atomic(tmp_path):
  (tmp_path / "toy.inter").write_text(
      "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
      + "".join("\t".join(map(str, r)) + "\n" for r in RATINGS))
  (tmp_path / "toy.item").write_text(
      "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
      "1\tToy Story\t1995\tAnimation Children's Comedy\n2\tMisérables, Les\t1995\tDrama\n"
      "3\tunkonwn\tunkonwn\tunknown\n4\tHeat\t\tAction\n", encoding="utf-8")
  dataset = read_recbole_atomic(tmp_path)
  assert dataset.name == "toy"
  _assert_events(dataset)
  assert dataset.catalog.fields == {
      "title": ["Toy Story", "Misérables, Les", None, "Heat"],
      "release_year": [1995, 1995, None, None],
      "genres": [["Animation", "Children's", "Comedy"], ["Drama"], [], ["Action"]],
  }


def test_split_title_year():
  assert split_title_year("Toy Story (1995)") == ("Toy Story", 1995)
  assert split_title_year("Brazil (1985) ") == ("Brazil", 1985)
  assert split_title_year("Babylon 5") == ("Babylon 5", None)
  assert split_title_year("unknown") == (None, None)


@pytest.mark.parametrize("file, content, line, message", [
    ("u.data", "1\t1\t5\t300\n1\t2\t3\n", 2, "expected 4 columns"),
    ("u.data", "1\t1\t5\t300\n\nx\t2\t3\t4\n", 3, "non-integer user or item id"),
    ("u.data", "1\t1\t5\t300\n1\t9\t3\t4\n", 2, "unknown item id 9"),
    ("u.data", "1\t1\tfive\t300\n", 1, "rating and timestamp must be numbers"),
    ("u.item", "1|Toy Story (1995)|01-Jan-1995\n", 1, "expected 24 '|'-separated columns"),
    ("u.item", "1|A (1995)||||" + "|".join(["0"] * 19) + "\nx|B (1995)||||"
     + "|".join(["0"] * 19) + "\n", 2, "non-integer item id 'x'"),
])
def test_bad_ml100k_names_file_and_line(tmp_path, file, content, line, message):
  folder = _write_ml100k(tmp_path / "ml")
  (folder / file).write_text(content, encoding="latin-1")
  with pytest.raises(DataError) as e:
    read_movielens(folder)
  assert str(e.value).startswith(f"{folder / file}:{line}: ")
  assert message in str(e.value)


def test_duplicate_movie_id(tmp_path):
  folder = _write_ml1m(tmp_path / "ml")
  (folder / "movies.dat").write_text("1::A (1995)::Drama\n2::B (1995)::Drama\n3::C::Drama\n"
                                     "1::D (1995)::Drama\n")
  with pytest.raises(DataError, match=r"movies.dat: duplicate item id 1"):
    read_movielens(folder)


def test_bad_recbole_header(tmp_path):
  (tmp_path / "x.inter").write_text("user_id\titem_id:token\n1\t1\n")
  with pytest.raises(DataError, match=r"x.inter:1: bad header cell 'user_id'"):
    read_recbole_atomic(tmp_path)


def test_no_movielens_files(tmp_path):
  with pytest.raises(DataError, match="no MovieLens files"):
    read_movielens(tmp_path)

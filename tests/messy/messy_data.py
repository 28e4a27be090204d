"""The data files of the messy notebook corpus: generated with fixed numpy seeds, shaped like the
public datasets the notebooks imitate (Kaggle's Titanic, IBM's Telco churn, the California
housing census extract, Wisconsin breast cancer as Kaggle ships it, House Prices, Analytics
Vidhya's loan prediction), and small enough that a build trains in seconds.

Nothing is downloaded: the breast cancer values are scikit-learn's bundled copy; everything else
is drawn here. Each function returns ``{relative path: DataFrame}``; ``make_messy.py`` writes them
with ``DataFrame.to_csv(index=False)`` and checks the committed copies against them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DataFiles = dict[str, pd.DataFrame]


def _logistic(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# --- Titanic -------------------------------------------------------------------------------------

_SURNAMES = (
    "Braund Cumings Heikkinen Futrelle Allen Moran McCarthy Palsson Johnson Nasser Sandstrom "
    "Bonnell Saundercock Andersson Vestrom Hewlett Rice Williams Vander Masselmans Fynney Beesley "
    "McGowan Sloper Asplund Emir Fortune Dodge Todoroff Uruchurtu Spencer Glynn Wheadon Meyer "
    "Holverson Mamee Cann Nicola-Yarred Ahlin Turpin Kraeff Laroche Devaney Rugg Harris Skoog "
    "Kink Chaffee Dooley Goldschmidt Greenfield Doling Kantor Petranec Ostby Woolner Rush Minahan"
).split()
_MALE_FIRST = (
    "Owen John William James Henry Thomas Charles George Edward Frederick Karl Ernst".split()
)
_FEMALE_FIRST = "Mary Anna Elizabeth Laina Margaret Florence Alice Helen Elin Marguerite".split()
_RARE_MALE = ["Dr", "Rev", "Col", "Major", "Sir", "Jonkheer", "Don", "Capt"]
_RARE_FEMALE = ["Mlle", "Ms", "Mme", "Lady", "Countess"]


def _titanic_people(rng: np.random.Generator, n: int) -> pd.DataFrame:
    pclass = rng.choice([1, 2, 3], size=n, p=[0.24, 0.21, 0.55])
    male = rng.random(n) < 0.65
    age = np.clip(rng.normal(np.choose(pclass - 1, [38.0, 30.0, 25.0]), 13.0), 1.0, 80.0)
    age = np.round(age)
    infants = rng.random(n) < 0.02
    age[infants] = rng.choice([0.42, 0.67, 0.83, 0.92], size=int(infants.sum()))
    halves = rng.random(n) < 0.03
    age[halves] += 0.5
    names, titles = [], []
    for index in range(n):
        surname = _SURNAMES[rng.integers(len(_SURNAMES))]
        if male[index]:
            title = "Master" if age[index] < 13 else "Mr"
            if rng.random() < 0.03:
                title = _RARE_MALE[rng.integers(len(_RARE_MALE))]
            first = _MALE_FIRST[rng.integers(len(_MALE_FIRST))]
            names.append(f"{surname}, {title}. {first}")
        else:
            title = "Miss" if age[index] < 18 or rng.random() < 0.4 else "Mrs"
            if rng.random() < 0.03:
                title = _RARE_FEMALE[rng.integers(len(_RARE_FEMALE))]
            first = _FEMALE_FIRST[rng.integers(len(_FEMALE_FIRST))]
            if title == "Mrs":
                husband = _MALE_FIRST[rng.integers(len(_MALE_FIRST))]
                names.append(f"{surname}, {title}. {husband} ({first} {surname})")
            else:
                names.append(f"{surname}, {title}. {first}")
        titles.append(title)
    sibsp = rng.choice([0, 1, 2, 3, 4, 5], size=n, p=[0.68, 0.23, 0.04, 0.02, 0.02, 0.01])
    parch = rng.choice([0, 1, 2, 3, 4], size=n, p=[0.76, 0.13, 0.09, 0.01, 0.01])
    fare_mean = np.choose(pclass - 1, [4.3, 3.0, 2.3])
    fare = np.round(np.exp(rng.normal(fare_mean, 0.5)) * (1 + 0.3 * (sibsp + parch)), 4)
    fare[rng.random(n) < 0.01] = 0.0
    tickets = []
    for _ in range(n):
        kind = rng.integers(4)
        number = int(rng.integers(1000, 400000))
        prefix = ["", "PC ", "A/5 ", "STON/O2. "][kind]
        tickets.append(f"{prefix}{number}")
    has_cabin = rng.random(n) < np.choose(pclass - 1, [0.75, 0.12, 0.04])
    cabins: list[object] = []
    for index in range(n):
        if not has_cabin[index]:
            cabins.append(np.nan)
            continue
        deck = "ABCDEFG"[rng.integers(7)]
        cabin = f"{deck}{int(rng.integers(1, 130))}"
        if rng.random() < 0.1:
            cabin += f" {deck}{int(rng.integers(1, 130))}"
        cabins.append(cabin)
    embarked = rng.choice(["S", "C", "Q"], size=n, p=[0.72, 0.19, 0.09]).astype(object)
    female = ~male
    child = age < 14
    z = -1.3 + 2.6 * female + np.choose(pclass - 1, [1.0, 0.3, -0.8]) + 1.0 * child
    z += -0.4 * (sibsp + parch > 3)
    survived = (rng.random(n) < _logistic(z)).astype(int)
    age_missing = rng.random(n) < 0.2
    age = np.where(age_missing, np.nan, age)
    return pd.DataFrame(
        {
            "Survived": survived,
            "Pclass": pclass,
            "Name": names,
            "Sex": np.where(male, "male", "female"),
            "Age": age,
            "SibSp": sibsp,
            "Parch": parch,
            "Ticket": tickets,
            "Fare": fare,
            "Cabin": cabins,
            "Embarked": embarked,
        }
    )


def titanic() -> DataFiles:
    """train.csv (600 passengers, with Survived) and test.csv (280, without), Kaggle's layout:
    missing Age, Cabin and Embarked in both, two missing Fares and a 'Dona' only in test."""
    rng = np.random.default_rng(1912)
    people = _titanic_people(rng, 880)
    people.insert(0, "PassengerId", np.arange(1, 881))
    train, test = people.iloc[:600].copy(), people.iloc[600:].drop(columns="Survived")
    train.loc[[61, 229], "Embarked"] = np.nan
    test = test.reset_index(drop=True)
    test.loc[[152, 201], "Fare"] = np.nan
    test.loc[17, "Embarked"] = np.nan
    test.loc[88, "Name"] = "Oliva y Ocana, Dona. Fermina"
    test.loc[88, "Sex"] = "female"
    return {"train.csv": train, "test.csv": test}


# --- Telco customer churn ----------------------------------------------------------------------


def telco(seed: int, n: int) -> pd.DataFrame:
    """IBM's Telco churn columns: Yes/No flags, 'No internet service' levels, and TotalCharges as
    text with a blank for customers in their first month."""
    rng = np.random.default_rng(seed)

    def yes_no(p: float | np.ndarray) -> np.ndarray:
        return np.where(rng.random(n) < p, "Yes", "No")

    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    ids = [f"{int(rng.integers(1000, 9999))}-{''.join(rng.choice(letters, 5))}" for _ in range(n)]
    tenure = rng.integers(1, 73, size=n)
    tenure[rng.random(n) < 0.02] = 0
    phone = yes_no(0.9)
    internet = rng.choice(["DSL", "Fiber optic", "No"], size=n, p=[0.34, 0.44, 0.22])
    frame = pd.DataFrame(
        {
            "customerID": ids,
            "gender": rng.choice(["Female", "Male"], size=n),
            "SeniorCitizen": (rng.random(n) < 0.16).astype(int),
            "Partner": yes_no(0.48),
            "Dependents": yes_no(0.3),
            "tenure": tenure,
            "PhoneService": phone,
            "MultipleLines": np.where(phone == "No", "No phone service", yes_no(0.42)),
            "InternetService": internet,
        }
    )
    services = [
        "OnlineSecurity",
        "OnlineBackup",
        "DeviceProtection",
        "TechSupport",
        "StreamingTV",
        "StreamingMovies",
    ]
    for service in services:
        frame[service] = np.where(internet == "No", "No internet service", yes_no(0.4))
    frame["Contract"] = rng.choice(
        ["Month-to-month", "One year", "Two year"], size=n, p=[0.55, 0.21, 0.24]
    )
    frame["PaperlessBilling"] = yes_no(0.59)
    frame["PaymentMethod"] = rng.choice(
        [
            "Electronic check",
            "Mailed check",
            "Bank transfer (automatic)",
            "Credit card (automatic)",
        ],
        size=n,
        p=[0.34, 0.23, 0.22, 0.21],
    )
    extras = sum((frame[service] == "Yes").to_numpy() for service in services)
    monthly = (
        20.0
        + 5.0 * (phone == "Yes")
        + np.select([internet == "DSL", internet == "Fiber optic"], [25.0, 50.0], 0.0)
        + 5.0 * extras
        + rng.normal(0, 2.0, n)
    )
    frame["MonthlyCharges"] = np.round(np.clip(monthly, 18.25, 118.75), 2)
    total = np.round(tenure * frame["MonthlyCharges"].to_numpy() * rng.normal(1, 0.03, n), 2)
    frame["TotalCharges"] = [
        " " if months == 0 else repr(float(value))
        for months, value in zip(tenure, total, strict=True)
    ]
    z = (
        -1.2
        + 1.4 * (frame["Contract"] == "Month-to-month")
        + 0.7 * (internet == "Fiber optic")
        - 0.035 * tenure
        + 0.5 * (frame["PaymentMethod"] == "Electronic check")
        + 0.3 * frame["SeniorCitizen"]
    )
    frame["Churn"] = yes_no(_logistic(z.to_numpy()))
    return frame


def churn_labelencoder() -> DataFiles:
    """1,000 customers in the Kaggle file name."""
    return {"WA_Fn-UseC_-Telco-Customer-Churn.csv": telco(7043, 1000)}


def churn_dictvectorizer() -> DataFiles:
    """900 other customers, same layout."""
    return {"WA_Fn-UseC_-Telco-Customer-Churn.csv": telco(2021, 900)}


# --- California housing -------------------------------------------------------------------------


def housing() -> DataFiles:
    """1,200 districts with the census extract's columns: ~1% missing total_bedrooms, counts
    stored as floats, ocean_proximity as text."""
    rng = np.random.default_rng(1990)
    n = 1200
    proximity = rng.choice(
        ["<1H OCEAN", "INLAND", "NEAR OCEAN", "NEAR BAY"], size=n, p=[0.44, 0.32, 0.13, 0.11]
    )
    lon_centre = np.select(
        [proximity == "INLAND", proximity == "NEAR BAY"], [-119.5, -122.3], -118.3
    )
    lat_centre = np.select([proximity == "INLAND", proximity == "NEAR BAY"], [36.5, 37.8], 34.1)
    households = np.round(np.exp(rng.normal(6.0, 0.55, n)))
    rooms = np.round(households * np.exp(rng.normal(1.65, 0.2, n)))
    bedrooms = np.round(rooms * np.clip(rng.normal(0.21, 0.03, n), 0.1, 0.4))
    population = np.round(households * np.exp(rng.normal(1.05, 0.25, n)))
    income = np.round(np.clip(np.exp(rng.normal(1.25, 0.45, n)), 0.5, 15.0), 4)
    value = (
        40000.0
        + 42000.0 * income
        + np.select([proximity == "INLAND", proximity == "NEAR BAY"], [-60000.0, 45000.0], 10000.0)
        + rng.normal(0, 40000.0, n)
    )
    frame = pd.DataFrame(
        {
            "longitude": np.round(lon_centre + rng.normal(0, 0.8, n), 2),
            "latitude": np.round(lat_centre + rng.normal(0, 0.7, n), 2),
            "housing_median_age": rng.integers(1, 53, size=n).astype(float),
            "total_rooms": rooms,
            "total_bedrooms": np.where(rng.random(n) < 0.01, np.nan, bedrooms),
            "population": population,
            "households": households,
            "median_income": income,
            "median_house_value": np.round(np.clip(value, 14999.0, 500001.0)),
            "ocean_proximity": proximity,
        }
    )
    return {"datasets/housing/housing.csv": frame}


# --- Breast cancer, as Kaggle's data.csv --------------------------------------------------------


def breast_cancer() -> DataFiles:
    """scikit-learn's bundled Wisconsin data in Kaggle's layout: id, diagnosis M/B, columns named
    radius_mean ... fractal_dimension_worst, and the trailing empty 'Unnamed: 32' column."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    columns = []
    # Kaggle's names keep the space in "concave points" but not in "fractal_dimension".
    for name in (n.replace("fractal dimension", "fractal_dimension") for n in bunch.feature_names):
        if name.startswith("mean "):
            columns.append(f"{name[5:]}_mean")
        elif name.endswith(" error"):
            columns.append(f"{name[:-6]}_se")
        else:
            columns.append(f"{name[6:]}_worst")
    rng = np.random.default_rng(569)
    frame = pd.DataFrame(bunch.data, columns=columns)
    frame.insert(0, "diagnosis", np.where(bunch.target == 0, "M", "B"))
    frame.insert(0, "id", 8670 + rng.choice(911311832, size=len(frame), replace=False))
    frame[""] = np.nan  # the trailing comma of every line in Kaggle's file
    return {"data.csv": frame}


# --- House prices -------------------------------------------------------------------------------


def house_prices() -> DataFiles:
    """train.csv (700 sales, with SalePrice) and test.csv (300), a slice of Kaggle's columns from
    MSSubClass to SaleCondition: missing LotFrontage, MasVnrArea and GarageType, and gaps in test
    only (MSZoning, TotalBsmtSF, GarageCars) as in the competition's files."""
    rng = np.random.default_rng(1460)
    n = 1000
    neighborhoods = "NAmes CollgCr OldTown Edwards Somerst Gilbert NridgHt Sawyer NWAmes BrkSide"
    quality = np.clip(np.round(rng.normal(6.1, 1.4, n)), 1, 10)
    first = np.round(np.exp(rng.normal(7.0, 0.3, n)))
    second = np.where(rng.random(n) < 0.43, np.round(np.exp(rng.normal(6.6, 0.3, n))), 0.0)
    basement = np.round(first * np.clip(rng.normal(0.95, 0.2, n), 0, 1.6))
    garage_type = rng.choice(["Attchd", "Detchd", "BuiltIn", "None"], n, p=[0.6, 0.27, 0.07, 0.06])
    garage_cars = np.where(garage_type == "None", 0, rng.choice([1, 2, 3], n, p=[0.28, 0.6, 0.12]))
    year = rng.integers(1880, 2011, size=n)
    living = first + second
    frame = pd.DataFrame(
        {
            "Id": np.arange(1, n + 1),
            "MSSubClass": rng.choice([20, 30, 50, 60, 70, 90, 120, 160, 190], n),
            "MSZoning": rng.choice(
                ["RL", "RM", "FV", "RH", "C (all)"], n, p=[0.79, 0.15, 0.04, 0.01, 0.01]
            ).astype(object),
            "LotFrontage": np.where(
                rng.random(n) < 0.17, np.nan, np.round(np.clip(rng.normal(70, 22, n), 21, 313))
            ),
            "LotArea": np.round(np.exp(rng.normal(9.1, 0.45, n))).astype(int),
            "Street": np.where(rng.random(n) < 0.995, "Pave", "Grvl"),
            "Neighborhood": rng.choice(neighborhoods.split(), n),
            "OverallQual": quality.astype(int),
            "OverallCond": np.clip(np.round(rng.normal(5.6, 1.1, n)), 1, 9).astype(int),
            "YearBuilt": year,
            "MasVnrArea": np.where(
                rng.random(n) < 0.6, 0.0, np.round(np.exp(rng.normal(5.2, 0.7, n)))
            ),
            "BsmtFinSF1": np.round(basement * rng.uniform(0, 0.9, n)),
            "TotalBsmtSF": basement,
            "1stFlrSF": first.astype(int),
            "2ndFlrSF": second.astype(int),
            "GrLivArea": living.astype(int),
            "GarageType": np.where(garage_type == "None", None, garage_type),
            "GarageCars": garage_cars.astype(float),
            "SaleCondition": rng.choice(
                ["Normal", "Partial", "Abnorml", "Family"], n, p=[0.82, 0.09, 0.07, 0.02]
            ),
        }
    )
    frame.loc[rng.random(n) < 0.01, "MasVnrArea"] = np.nan
    log_price = (
        10.2
        + 0.11 * quality
        + 0.00035 * living
        + 0.002 * (year - 1950)
        + 0.04 * garage_cars
        + rng.normal(0, 0.13, n)
    )
    frame["SalePrice"] = np.round(np.exp(log_price)).astype(int)
    train = frame.iloc[:700].copy()
    test = frame.iloc[700:].drop(columns="SalePrice").reset_index(drop=True)
    test.loc[[3, 250], "MSZoning"] = np.nan
    test.loc[60, "TotalBsmtSF"] = np.nan
    test.loc[121, "GarageCars"] = np.nan
    return {"train.csv": train, "test.csv": test}


# --- Loan prediction ----------------------------------------------------------------------------


def loans() -> DataFiles:
    """614 applications in Analytics Vidhya's layout: gaps in most columns, Dependents as text
    with '3+', Credit_History as 1.0/0.0 with gaps, Loan_Status Y/N."""
    rng = np.random.default_rng(614)
    n = 614

    def with_gaps(values: np.ndarray, share: float) -> np.ndarray:
        values = values.astype(object)
        values[rng.random(n) < share] = np.nan
        return values

    credit = rng.choice([1.0, 0.0], n, p=[0.84, 0.16])
    applicant = np.clip(np.round(np.exp(rng.normal(8.35, 0.55, n))), 150, 60000).astype(int)
    coapplicant = np.where(
        rng.random(n) < 0.45, 0.0, np.round(np.clip(np.exp(rng.normal(7.4, 0.6, n)), 0, 20000))
    )
    amount = np.round(np.clip((applicant + coapplicant) / 40 * rng.normal(1, 0.25, n), 9, 700))
    p_yes = np.where(credit == 1.0, 0.8, 0.1)
    frame = pd.DataFrame(
        {
            "Loan_ID": [f"LP{1002 + 3 * i:06d}" for i in range(n)],
            "Gender": with_gaps(rng.choice(["Male", "Female"], n, p=[0.81, 0.19]), 0.02),
            "Married": with_gaps(rng.choice(["Yes", "No"], n, p=[0.65, 0.35]), 0.005),
            "Dependents": with_gaps(
                rng.choice(["0", "1", "2", "3+"], n, p=[0.58, 0.17, 0.16, 0.09]), 0.025
            ),
            "Education": rng.choice(["Graduate", "Not Graduate"], n, p=[0.78, 0.22]),
            "Self_Employed": with_gaps(rng.choice(["No", "Yes"], n, p=[0.86, 0.14]), 0.05),
            "ApplicantIncome": applicant,
            "CoapplicantIncome": coapplicant,
            "LoanAmount": np.where(rng.random(n) < 0.035, np.nan, amount),
            "Loan_Amount_Term": np.where(
                rng.random(n) < 0.02,
                np.nan,
                rng.choice(
                    [360.0, 180.0, 480.0, 300.0, 240.0, 84.0, 120.0],
                    n,
                    p=[0.85, 0.07, 0.025, 0.02, 0.015, 0.01, 0.01],
                ),
            ),
            "Credit_History": np.where(rng.random(n) < 0.08, np.nan, credit),
            "Property_Area": rng.choice(["Semiurban", "Urban", "Rural"], n, p=[0.38, 0.33, 0.29]),
            "Loan_Status": np.where(rng.random(n) < p_yes, "Y", "N"),
        }
    )
    return {"train_u6lujuX_CVtuZ9i.csv": frame}

"""The data files of the untagged notebook corpus that the messy corpus does not already make:
Pima Indians diabetes (Kaggle's ``diabetes.csv``, zeros standing for missing values) and IBM's
HR employee attrition extract. Drawn with fixed numpy seeds, small enough to train in seconds;
nothing is downloaded. Titanic and California housing are ``messy_data``'s own.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DataFiles = dict[str, pd.DataFrame]


def _logistic(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def diabetes() -> DataFiles:
    """500 women, Kaggle's nine columns; 0 where a measurement is missing, as in the original
    (a few Glucose and BMI, many SkinThickness and Insulin)."""
    rng = np.random.default_rng(768)
    n = 500
    age = np.clip(np.round(rng.gamma(2.2, 7.0, n) + 21), 21, 81).astype(int)
    pregnancies = np.clip(np.round(rng.gamma(1.3, 2.8, n)), 0, 17).astype(int)
    glucose = np.round(np.clip(rng.normal(121, 31, n), 44, 199))
    pressure = np.round(np.clip(rng.normal(72, 12, n), 24, 122))
    skin = np.round(np.clip(rng.normal(29, 10, n), 7, 99))
    insulin = np.round(np.clip(rng.lognormal(4.8, 0.6, n), 14, 846))
    bmi = np.round(np.clip(rng.normal(32.4, 6.9, n), 18.2, 67.1), 1)
    pedigree = np.round(np.clip(rng.lognormal(-1.0, 0.6, n), 0.078, 2.42), 3)
    risk = 0.035 * (glucose - 121) + 0.09 * (bmi - 32) + 0.03 * (age - 33) + 0.8 * (pedigree - 0.45)
    outcome = (rng.random(n) < _logistic(risk - 0.6)).astype(int)
    frame = pd.DataFrame(
        {
            "Pregnancies": pregnancies,
            "Glucose": glucose,
            "BloodPressure": pressure,
            "SkinThickness": skin,
            "Insulin": insulin,
            "BMI": bmi,
            "DiabetesPedigreeFunction": pedigree,
            "Age": age,
            "Outcome": outcome,
        }
    )
    for column, share in (
        ("Glucose", 0.01),
        ("BloodPressure", 0.04),
        ("SkinThickness", 0.3),
        ("Insulin", 0.45),
        ("BMI", 0.015),
    ):
        frame.loc[rng.random(n) < share, column] = 0
    return {"diabetes.csv": frame}


def attrition() -> DataFiles:
    """600 employees with a slice of IBM's columns: text categories, a Yes/No target, an
    EmployeeNumber id and ~2% missing MonthlyIncome."""
    rng = np.random.default_rng(1470)
    n = 600
    age = rng.integers(18, 61, n)
    years_total = np.clip(age - 18 - rng.integers(0, 8, n), 0, 40)
    years_company = np.minimum(years_total, rng.integers(0, 20, n))
    level = np.clip(1 + years_total // 8 + rng.integers(0, 2, n), 1, 5)
    income = np.round(1500 + 2800 * level + rng.normal(0, 900, n)).clip(1009, 19999)
    overtime = np.where(rng.random(n) < 0.28, "Yes", "No")
    travel = rng.choice(
        ["Travel_Rarely", "Travel_Frequently", "Non-Travel"], size=n, p=[0.71, 0.19, 0.10]
    )
    department = rng.choice(
        ["Research & Development", "Sales", "Human Resources"], size=n, p=[0.65, 0.30, 0.05]
    )
    field = rng.choice(
        ["Life Sciences", "Medical", "Marketing", "Technical Degree", "Other", "Human Resources"],
        size=n,
        p=[0.41, 0.32, 0.11, 0.09, 0.05, 0.02],
    )
    marital = rng.choice(["Married", "Single", "Divorced"], size=n, p=[0.46, 0.32, 0.22])
    satisfaction = rng.integers(1, 5, n)
    distance = rng.integers(1, 30, n)
    risk = (
        1.4 * (overtime == "Yes")
        + 0.9 * (marital == "Single")
        + 0.7 * (travel == "Travel_Frequently")
        - 0.35 * (satisfaction - 2.5)
        - 0.00012 * (income - 6500)
        - 0.04 * (years_company - 7)
        + 0.02 * (distance - 9)
    )
    attrition = np.where(rng.random(n) < _logistic(risk - 1.8), "Yes", "No")
    frame = pd.DataFrame(
        {
            "Age": age,
            "Attrition": attrition,
            "BusinessTravel": travel,
            "Department": department,
            "DistanceFromHome": distance,
            "Education": rng.integers(1, 6, n),
            "EducationField": field,
            "EmployeeNumber": 1 + rng.choice(2068, size=n, replace=False),
            "Gender": np.where(rng.random(n) < 0.6, "Male", "Female"),
            "JobLevel": level,
            "JobSatisfaction": satisfaction,
            "MaritalStatus": marital,
            "MonthlyIncome": np.where(rng.random(n) < 0.02, np.nan, income),
            "NumCompaniesWorked": rng.integers(0, 10, n),
            "OverTime": overtime,
            "TotalWorkingYears": years_total,
            "YearsAtCompany": years_company,
        }
    )
    return {"HR-Employee-Attrition.csv": frame}

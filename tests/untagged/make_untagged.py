"""Write the untagged notebook corpus: notebooks as people write them, NOT for nb2prod, each in
``tests/untagged/<name>/`` with the data it reads and ``hand_tags.json``.

    python tests/untagged/make_untagged.py          # (re)write the notebooks, data, hand tags
    python tests/untagged/make_untagged.py --check  # exit 1 if a committed file is stale

Where ``tests/messy`` adds nb2prod's role tags to famous notebooks, these carry none (or only
Kubeflow Kale's): they are what ``nb2prod tag`` meets. Each has an imports cell, exploration
(``head``, ``info``, ``describe``, ``value_counts``, matplotlib plots), cleaning and feature
engineering over whole frames, a split, a fit, predictions on held-out rows and metrics:

- ``kale_titanic``: Kubeflow Kale's titanic example layout (``imports``, ``functions``,
  ``pipeline-parameters``, ``block:``/``prev:`` steps with untagged continuation cells, ``skip``
  exploration, ``pipeline-metrics``);
- ``housing_helpers``: path constants, a loader and a feature helper in untagged cells;
- ``no_tags_kaggle``: Kaggle style, zeros as missing values, a scaler fitted on the train split,
  a clean predict cell;
- ``attrition_mixed``: the only predictions are in a cell that also prints metrics;
- ``wine_ndarray``: numpy arrays from scikit-learn's bundled data, an untagged parameters cell.

``hand_tags.json`` holds, for each code cell (numbered from 1 over all cells, markdown included,
as nb2prod's messages number them), the role a careful person gives it: ``null`` for imports and
definition-only cells, ``skip`` for exploration and plots. Tests read the corpus through
``tests/messy_reference.py`` (``UNTAGGED_CASES``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pandas as pd
from nbformat import NotebookNode

import untagged_data

HERE = Path(__file__).resolve().parent

# The cell helpers and data generators are the example notebooks' and the messy corpus's own.
sys.path.insert(0, str(HERE.parents[1] / "example_notebooks"))
sys.path.insert(0, str(HERE.parent / "messy"))
import messy_data  # noqa: E402
from make_examples import code, md, notebook, sync  # noqa: E402

Role = str | None


@dataclass(frozen=True)
class Hand:
    """A code cell and the role a careful person would tag it with (None: no tag)."""

    role: Role
    cell: NotebookNode


def c(role: Role, text: str, *tags: str) -> Hand:
    """A code cell carrying ``tags`` as written (Kale's, or none) and its hand role."""
    return Hand(role, code(text, *tags))


@dataclass(frozen=True)
class Written:
    """A corpus notebook and its hand tags by cell number."""

    notebook: NotebookNode
    hand_tags: dict[str, Role]


def written(items: list[NotebookNode | Hand]) -> Written:
    """The notebook of ``items`` and the hand role of each code cell, numbered from 1."""
    cells = [item.cell if isinstance(item, Hand) else item for item in items]
    hand = {
        str(number): item.role
        for number, item in enumerate(items, start=1)
        if isinstance(item, Hand)
    }
    return Written(notebook(cells), hand)


# --- a. Kubeflow Kale's titanic example ---------------------------------------------------------


def kale_titanic() -> Written:
    """Kale tags as its examples write them; the predictions in their own ``block:predict``."""
    return written(
        [
            md("# Titanic: Machine Learning from Disaster\n\nA Kubeflow pipeline made by Kale."),
            c(
                None,
                """
                import re
                import numpy as np
                import pandas as pd

                import matplotlib.pyplot as plt

                from sklearn.linear_model import LogisticRegression
                from sklearn.ensemble import RandomForestClassifier
                """,
                "imports",
            ),
            c(
                "parameters",
                """
                n_estimators = 100
                max_depth = 6
                random_state = 42
                """,
                "pipeline-parameters",
            ),
            c(
                None,
                """
                DECKS = {"A": 1, "B": 2, "C": 3, "D": 4, "E": 5, "F": 6, "G": 7, "U": 8}

                def deck_of(cabin):
                    # the deck is the cabin's letter: "C85" -> 3; unknown letters -> 0
                    letters = re.compile("([a-zA-Z]+)").search(cabin)
                    return DECKS.get(letters.group(), 0) if letters else 0
                """,
                "functions",
            ),
            md("## Load data"),
            c(
                "load",
                """
                path = "data/"

                PREDICTION_LABEL = 'Survived'

                test_df = pd.read_csv(path + "test.csv")
                train_df = pd.read_csv(path + "train.csv")
                """,
                "block:loaddata",
            ),
            md("## Let's explore the data"),
            c("skip", "train_df.info()", "skip"),
            c("skip", "train_df.describe()", "skip"),
            c("skip", "train_df.head(8)", "skip"),
            c(
                "skip",
                """
                total = train_df.isnull().sum().sort_values(ascending=False)
                percent_1 = train_df.isnull().sum()/train_df.isnull().count()*100
                percent_2 = (round(percent_1, 1)).sort_values(ascending=False)
                missing_data = pd.concat([total, percent_2], axis=1, keys=['Total', '%'])
                missing_data.head(5)
                """,
                "skip",
            ),
            c(
                "skip",
                """
                survived = 'survived'
                not_survived = 'not survived'
                fig, axes = plt.subplots(nrows=1, ncols=2,figsize=(10, 4))
                women = train_df[train_df['Sex']=='female']
                men = train_df[train_df['Sex']=='male']
                ax = axes[0]
                ax.hist(women[women['Survived']==1].Age.dropna(), bins=18, label = survived, alpha=0.6)
                ax.hist(women[women['Survived']==0].Age.dropna(), bins=40, label = not_survived, alpha=0.6)
                ax.legend()
                ax.set_title('Female')
                ax = axes[1]
                ax.hist(men[men['Survived']==1].Age.dropna(), bins=18, label = survived, alpha=0.6)
                ax.hist(men[men['Survived']==0].Age.dropna(), bins=40, label = not_survived, alpha=0.6)
                ax.legend()
                _ = ax.set_title('Male')
                """,
                "skip",
            ),
            c("skip", "train_df['Embarked'].value_counts()", "skip"),
            c(
                "skip",
                "train_df[['Pclass', 'Survived']].groupby(['Pclass']).mean().plot(kind='bar')",
                "skip",
            ),
            md("## Data preprocessing"),
            c(
                "preprocess",
                """
                data = [train_df, test_df]
                for dataset in data:
                    dataset['relatives'] = dataset['SibSp'] + dataset['Parch']
                    dataset.loc[dataset['relatives'] > 0, 'not_alone'] = 0
                    dataset.loc[dataset['relatives'] == 0, 'not_alone'] = 1
                    dataset['not_alone'] = dataset['not_alone'].astype(int)
                train_df['not_alone'].value_counts()
                """,
                "block:datapreprocessing",
                "prev:loaddata",
            ),
            c(
                "preprocess",
                """
                # This does not contribute to a person survival probability
                train_df = train_df.drop(['PassengerId'], axis=1)
                """,
            ),
            c(
                "preprocess",
                """
                data = [train_df, test_df]
                for dataset in data:
                    dataset['Cabin'] = dataset['Cabin'].fillna("U0")
                    dataset['Deck'] = dataset['Cabin'].map(deck_of)
                    dataset['Deck'] = dataset['Deck'].astype(int)
                # we can now drop the cabin feature
                train_df = train_df.drop(['Cabin'], axis=1)
                test_df = test_df.drop(['Cabin'], axis=1)
                """,
            ),
            c(
                "preprocess",
                """
                data = [train_df, test_df]
                median_age = train_df["Age"].median()
                for dataset in data:
                    dataset["Age"] = dataset["Age"].fillna(median_age)
                    dataset["Age"] = dataset["Age"].astype(int)
                train_df["Age"].isnull().sum()
                """,
            ),
            c(
                "preprocess",
                """
                common_value = 'S'
                data = [train_df, test_df]

                for dataset in data:
                    dataset['Embarked'] = dataset['Embarked'].fillna(common_value)
                """,
            ),
            md("## Feature engineering"),
            c(
                "preprocess",
                """
                data = [train_df, test_df]

                for dataset in data:
                    dataset['Fare'] = dataset['Fare'].fillna(0)
                    dataset['Fare'] = dataset['Fare'].astype(int)
                """,
                "block:featureengineering",
                "prev:datapreprocessing",
            ),
            c(
                "preprocess",
                r"""
                data = [train_df, test_df]
                titles = {"Mr": 1, "Miss": 2, "Mrs": 3, "Master": 4, "Rare": 5}

                for dataset in data:
                    # extract titles
                    dataset['Title'] = dataset.Name.str.extract(r' ([A-Za-z]+)\.', expand=False)
                    # replace titles with a more common title or as Rare
                    dataset['Title'] = dataset['Title'].replace(['Lady', 'Countess','Capt', 'Col','Don', 'Dr',\
                                                            'Major', 'Rev', 'Sir', 'Jonkheer', 'Dona'], 'Rare')
                    dataset['Title'] = dataset['Title'].replace('Mlle', 'Miss')
                    dataset['Title'] = dataset['Title'].replace('Ms', 'Miss')
                    dataset['Title'] = dataset['Title'].replace('Mme', 'Mrs')
                    # convert titles into numbers
                    dataset['Title'] = dataset['Title'].map(titles)
                    # filling NaN with 0, to get safe
                    dataset['Title'] = dataset['Title'].fillna(0)
                train_df = train_df.drop(['Name'], axis=1)
                test_df = test_df.drop(['Name'], axis=1)
                """,
            ),
            c(
                "preprocess",
                """
                genders = {"male": 0, "female": 1}
                ports = {"S": 0, "C": 1, "Q": 2}
                data = [train_df, test_df]

                for dataset in data:
                    dataset['Sex'] = dataset['Sex'].map(genders)
                    dataset['Embarked'] = dataset['Embarked'].map(ports)

                train_df = train_df.drop(['Ticket'], axis=1)
                test_df = test_df.drop(['Ticket'], axis=1)
                """,
            ),
            c(
                "preprocess",
                """
                data = [train_df, test_df]
                for dataset in data:
                    dataset['Age'] = dataset['Age'].astype(int)
                    dataset.loc[ dataset['Age'] <= 11, 'Age'] = 0
                    dataset.loc[(dataset['Age'] > 11) & (dataset['Age'] <= 18), 'Age'] = 1
                    dataset.loc[(dataset['Age'] > 18) & (dataset['Age'] <= 22), 'Age'] = 2
                    dataset.loc[(dataset['Age'] > 22) & (dataset['Age'] <= 27), 'Age'] = 3
                    dataset.loc[(dataset['Age'] > 27) & (dataset['Age'] <= 33), 'Age'] = 4
                    dataset.loc[(dataset['Age'] > 33) & (dataset['Age'] <= 40), 'Age'] = 5
                    dataset.loc[(dataset['Age'] > 40) & (dataset['Age'] <= 66), 'Age'] = 6
                    dataset.loc[ dataset['Age'] > 66, 'Age'] = 6
                """,
            ),
            c(
                "preprocess",
                """
                data = [train_df, test_df]

                for dataset in data:
                    dataset.loc[ dataset['Fare'] <= 7.91, 'Fare'] = 0
                    dataset.loc[(dataset['Fare'] > 7.91) & (dataset['Fare'] <= 14.454), 'Fare'] = 1
                    dataset.loc[(dataset['Fare'] > 14.454) & (dataset['Fare'] <= 31), 'Fare']   = 2
                    dataset.loc[(dataset['Fare'] > 31) & (dataset['Fare'] <= 99), 'Fare']   = 3
                    dataset.loc[(dataset['Fare'] > 99) & (dataset['Fare'] <= 250), 'Fare']   = 4
                    dataset.loc[ dataset['Fare'] > 250, 'Fare'] = 5
                    dataset['Fare'] = dataset['Fare'].astype(int)
                    dataset['Age_Class']= dataset['Age']* dataset['Pclass']
                    dataset['Fare_Per_Person'] = dataset['Fare']/(dataset['relatives']+1)
                    dataset['Fare_Per_Person'] = dataset['Fare_Per_Person'].astype(int)
                """,
            ),
            c(
                "preprocess",
                """
                train_labels = train_df[PREDICTION_LABEL]
                train_df = train_df.drop(PREDICTION_LABEL, axis=1)
                """,
            ),
            c("skip", "train_df.head(10)", "skip"),
            md("## Models"),
            c(
                "train",
                """
                random_forest = RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth, random_state=random_state)
                random_forest.fit(train_df, train_labels)
                acc_random_forest = round(random_forest.score(train_df, train_labels) * 100, 2)
                """,
                "block:randomforest",
                "prev:featureengineering",
            ),
            c(
                "train",
                """
                logreg = LogisticRegression(solver='lbfgs', max_iter=1000)
                logreg.fit(train_df, train_labels)
                acc_log = round(logreg.score(train_df, train_labels) * 100, 2)
                """,
                "block:logisticregression",
                "prev:featureengineering",
            ),
            md("## Results"),
            c(
                "evaluate",
                """
                results = pd.DataFrame({
                    'Model': ['Random Forest', 'Logistic Regression'],
                    'Score': [acc_random_forest, acc_log]})
                result_df = results.sort_values(by='Score', ascending=False)
                result_df = result_df.set_index('Score')
                print(result_df)
                """,
                "block:results",
                "prev:randomforest",
                "prev:logisticregression",
            ),
            c(
                "predict",
                """
                X_test = test_df.drop("PassengerId", axis=1).copy()
                Y_pred = random_forest.predict(X_test)
                """,
                "block:predict",
                "prev:randomforest",
            ),
            c(
                "skip",
                """
                submission = pd.DataFrame({"PassengerId": test_df["PassengerId"], "Survived": Y_pred})
                submission.to_csv('submission.csv', index=False)
                """,
                "skip",
            ),
            c("evaluate", "print(acc_random_forest)\nprint(acc_log)", "pipeline-metrics"),
        ]
    )


# --- b. Helpers and path constants, "Hands-On Machine Learning" chapter 2 style ----------------


def housing_helpers() -> Written:
    """Untagged constants, a loader function and a feature helper; dummies over the whole frame."""
    return written(
        [
            md("# California housing prices\n\nPredict a district's median house value."),
            c(
                None,
                """
                import os
                import numpy as np
                import pandas as pd
                import matplotlib.pyplot as plt

                from sklearn.model_selection import train_test_split
                from sklearn.preprocessing import StandardScaler
                from sklearn.linear_model import LinearRegression
                from sklearn.metrics import mean_squared_error
                """,
            ),
            md("## Get the data"),
            c(None, 'HOUSING_PATH = os.path.join("datasets", "housing")'),
            c(
                None,
                """
                def load_housing_data(housing_path=HOUSING_PATH):
                    return pd.read_csv(os.path.join(housing_path, "housing.csv"))
                """,
            ),
            c(
                None,
                """
                def add_ratios(df):
                    \"\"\"Per-household and per-room ratios: more telling than the raw counts.\"\"\"
                    df = df.copy()
                    df["rooms_per_household"] = df["total_rooms"] / df["households"]
                    df["bedrooms_per_room"] = df["total_bedrooms"] / df["total_rooms"]
                    df["population_per_household"] = df["population"] / df["households"]
                    return df
                """,
            ),
            c("load", "housing = load_housing_data()\nhousing.head()"),
            c("skip", "housing.info()"),
            c("skip", 'housing["ocean_proximity"].value_counts()'),
            c("skip", "housing.describe()"),
            c(
                "skip",
                """
                %matplotlib inline
                housing.hist(bins=50, figsize=(20,15))
                plt.show()
                """,
            ),
            c(
                "skip",
                """
                housing.plot(kind="scatter", x="longitude", y="latitude", alpha=0.4,
                             s=housing["population"]/100, label="population", figsize=(10,7),
                             c="median_house_value", cmap=plt.get_cmap("jet"), colorbar=True)
                plt.legend()
                """,
            ),
            md("## Prepare the data for machine learning"),
            c(
                "preprocess",
                """
                median = housing["total_bedrooms"].median()
                housing["total_bedrooms"] = housing["total_bedrooms"].fillna(median)
                """,
            ),
            c("preprocess", "housing = add_ratios(housing)"),
            c(
                "skip",
                """
                corr_matrix = housing.corr(numeric_only=True)
                corr_matrix["median_house_value"].sort_values(ascending=False)
                """,
            ),
            c(
                "preprocess",
                'housing = pd.get_dummies(housing, columns=["ocean_proximity"])\nhousing.head()',
            ),
            c(
                "preprocess",
                """
                X = housing.drop("median_house_value", axis=1)
                y = housing["median_house_value"].copy()
                X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
                """,
            ),
            c(
                "preprocess",
                """
                scaler = StandardScaler()
                X_train_scaled = scaler.fit_transform(X_train)
                X_test_scaled = scaler.transform(X_test)
                """,
            ),
            md("## Select and train a model"),
            c("train", "lin_reg = LinearRegression()\nlin_reg.fit(X_train_scaled, y_train)"),
            c(
                "evaluate",
                """
                housing_predictions = lin_reg.predict(X_train_scaled)
                lin_rmse = np.sqrt(mean_squared_error(y_train, housing_predictions))
                lin_rmse
                """,
            ),
            md("## Evaluate on the test set"),
            c("predict", "final_predictions = lin_reg.predict(X_test_scaled)"),
            c(
                "evaluate",
                """
                final_rmse = np.sqrt(mean_squared_error(y_test, final_predictions))
                final_rmse
                """,
            ),
            c(
                "skip",
                """
                plt.scatter(y_test, final_predictions, alpha=0.3)
                plt.xlabel("actual")
                plt.ylabel("predicted")
                plt.show()
                """,
            ),
        ]
    )


# --- c. Kaggle style, no tags at all ------------------------------------------------------------


def no_tags_kaggle() -> Written:
    """Zeros as missing values filled over the whole frame; a scaler fitted on the train split."""
    return written(
        [
            md("# Diabetes prediction\n\nPima Indians Diabetes Database: EDA and a random forest."),
            c(
                None,
                """
                import numpy as np
                import pandas as pd
                import matplotlib.pyplot as plt
                from sklearn.model_selection import train_test_split
                from sklearn.preprocessing import StandardScaler
                from sklearn.ensemble import RandomForestClassifier
                from sklearn.neighbors import KNeighborsClassifier
                from sklearn.metrics import accuracy_score, confusion_matrix, classification_report
                import warnings
                warnings.filterwarnings('ignore')
                """,
            ),
            c("load", "diabetes_df = pd.read_csv('diabetes.csv')"),
            c("skip", "diabetes_df.head()"),
            c("skip", "diabetes_df.info()"),
            c("skip", "diabetes_df.describe().T"),
            c("skip", "diabetes_df['Outcome'].value_counts()"),
            c("skip", "p = diabetes_df.hist(figsize = (20,20))"),
            md("Zeros in Glucose, BloodPressure, SkinThickness, Insulin and BMI mean *missing*."),
            c(
                "preprocess",
                """
                diabetes_df_copy = diabetes_df.copy(deep = True)
                diabetes_df_copy[['Glucose','BloodPressure','SkinThickness','Insulin','BMI']] = diabetes_df_copy[['Glucose','BloodPressure','SkinThickness','Insulin','BMI']].replace(0,np.nan)

                print(diabetes_df_copy.isnull().sum())
                """,
            ),
            c(
                "preprocess",
                """
                diabetes_df_copy['Glucose'] = diabetes_df_copy['Glucose'].fillna(diabetes_df_copy['Glucose'].mean())
                diabetes_df_copy['BloodPressure'] = diabetes_df_copy['BloodPressure'].fillna(diabetes_df_copy['BloodPressure'].mean())
                diabetes_df_copy['SkinThickness'] = diabetes_df_copy['SkinThickness'].fillna(diabetes_df_copy['SkinThickness'].median())
                diabetes_df_copy['Insulin'] = diabetes_df_copy['Insulin'].fillna(diabetes_df_copy['Insulin'].median())
                diabetes_df_copy['BMI'] = diabetes_df_copy['BMI'].fillna(diabetes_df_copy['BMI'].median())
                """,
            ),
            c("skip", "p = diabetes_df_copy.hist(figsize = (20,20))"),
            c(
                "skip",
                """
                plt.figure(figsize=(12,10))
                plt.imshow(diabetes_df_copy.corr(), cmap='RdYlGn')
                plt.colorbar()
                plt.xticks(range(9), diabetes_df_copy.columns, rotation=90)
                plt.yticks(range(9), diabetes_df_copy.columns)
                plt.show()
                """,
            ),
            md("## Model building"),
            c(
                "preprocess",
                """
                X = diabetes_df_copy.drop('Outcome', axis=1)
                y = diabetes_df_copy['Outcome']
                X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.33, random_state=7)
                """,
            ),
            c(
                "preprocess",
                """
                sc_X = StandardScaler()
                X_train = pd.DataFrame(sc_X.fit_transform(X_train), columns=X.columns)
                X_test = pd.DataFrame(sc_X.transform(X_test), columns=X.columns)
                """,
            ),
            c(
                "train",
                """
                rfc = RandomForestClassifier(n_estimators=100, random_state=7)
                rfc.fit(X_train, y_train)
                """,
            ),
            c(
                "evaluate",
                """
                rfc_train = rfc.predict(X_train)
                print("Accuracy_Score =", format(accuracy_score(y_train, rfc_train)))
                """,
            ),
            c("predict", "predictions = rfc.predict(X_test)"),
            c("evaluate", 'print("Accuracy_Score =", format(accuracy_score(y_test, predictions)))'),
            c(
                "evaluate",
                """
                print(confusion_matrix(y_test, predictions))
                print(classification_report(y_test,predictions))
                """,
            ),
            c(
                "skip",
                """
                test_scores = []
                for i in range(1, 15):
                    knn = KNeighborsClassifier(i)
                    knn.fit(X_train, y_train)
                    test_scores.append(knn.score(X_test, y_test))
                max(test_scores)
                """,
            ),
        ]
    )


# --- d. Predictions only inside a cell that also prints metrics ----------------------------------


def attrition_mixed() -> Written:
    """One LabelEncoder refitted per column; ``y_pred`` is bound only in a metrics cell."""
    return written(
        [
            md("# Employee attrition\n\nWhich employees are likely to leave?"),
            c(
                None,
                """
                import pandas as pd
                import numpy as np
                import matplotlib.pyplot as plt

                from sklearn.preprocessing import LabelEncoder
                from sklearn.model_selection import train_test_split
                from sklearn.tree import DecisionTreeClassifier
                from sklearn.metrics import accuracy_score, classification_report
                """,
            ),
            c("load", 'df = pd.read_csv("HR-Employee-Attrition.csv")\nprint(df.shape)'),
            c("skip", "df.head()"),
            c("skip", "df.isnull().sum()"),
            c("skip", "df['Attrition'].value_counts().plot(kind='bar')\nplt.title('Attrition')"),
            c("skip", "df.groupby('Department')['Attrition'].value_counts(normalize=True)"),
            md("## Cleaning and encoding"),
            c(
                "preprocess",
                """
                df = df.drop(['EmployeeNumber'], axis=1)
                df['MonthlyIncome'] = df['MonthlyIncome'].fillna(df['MonthlyIncome'].median())
                """,
            ),
            c(
                "preprocess",
                """
                df['Attrition'] = df['Attrition'].map({'Yes': 1, 'No': 0})
                categorical = ['BusinessTravel', 'Department', 'EducationField', 'Gender', 'MaritalStatus', 'OverTime']
                le = LabelEncoder()
                for col in categorical:
                    df[col] = le.fit_transform(df[col])
                """,
            ),
            c(
                "preprocess",
                "df['IncomePerYear'] = df['MonthlyIncome'] / (df['TotalWorkingYears'] + 1)",
            ),
            c("skip", "df.describe()"),
            md("## Model"),
            c(
                "preprocess",
                """
                X = df.drop('Attrition', axis=1)
                y = df['Attrition']
                X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
                """,
            ),
            c(
                "train",
                """
                clf = DecisionTreeClassifier(max_depth=5, random_state=0)
                clf.fit(X_train, y_train)
                """,
            ),
            c(
                "evaluate",
                """
                y_pred = clf.predict(X_test)
                print(accuracy_score(y_test, y_pred))
                print(classification_report(y_test, y_pred))
                """,
            ),
            c(
                "skip",
                """
                importances = pd.Series(clf.feature_importances_, index=X.columns).sort_values()
                importances.plot(kind='barh', figsize=(8, 6))
                plt.show()
                """,
            ),
        ]
    )


# --- e. numpy arrays, scikit-learn's bundled data, an untagged parameters cell -------------------


def wine_ndarray() -> Written:
    """Arrays without column names, a scaler fitted on the train split, literal parameters."""
    return written(
        [
            md("# Wine classification with logistic regression"),
            c(
                None,
                """
                import numpy as np
                import matplotlib.pyplot as plt
                from sklearn.datasets import load_wine
                from sklearn.model_selection import train_test_split
                from sklearn.preprocessing import StandardScaler
                from sklearn.linear_model import LogisticRegression
                from sklearn.metrics import accuracy_score, f1_score
                """,
            ),
            c("parameters", "C = 0.5\nmax_iter = 1000\nseed = 0"),
            c("load", "wine = load_wine()\nX, y = wine.data, wine.target"),
            c("skip", "print(X.shape)\nprint(np.bincount(y))"),
            c(
                "skip",
                """
                plt.scatter(X[:, 0], X[:, 12], c=y, cmap='viridis')
                plt.xlabel(wine.feature_names[0])
                plt.ylabel(wine.feature_names[12])
                """,
            ),
            c(
                "preprocess",
                "X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)",
            ),
            c(
                "preprocess",
                """
                scaler = StandardScaler().fit(X_train)
                X_train_std = scaler.transform(X_train)
                X_test_std = scaler.transform(X_test)
                """,
            ),
            c(
                "train",
                "lr = LogisticRegression(C=C, max_iter=max_iter)\nlr.fit(X_train_std, y_train)",
            ),
            c("predict", "y_pred = lr.predict(X_test_std)"),
            c(
                "evaluate",
                """
                acc = accuracy_score(y_test, y_pred)
                f1 = f1_score(y_test, y_pred, average='macro')
                print(f"accuracy {acc:.3f}  macro F1 {f1:.3f}")
                """,
            ),
            c(
                "skip",
                """
                plt.figure(figsize=(8, 4))
                plt.bar(range(X.shape[1]), np.abs(lr.coef_).mean(axis=0))
                plt.xticks(range(X.shape[1]), wine.feature_names, rotation=90)
                plt.tight_layout()
                """,
            ),
        ]
    )


# --- writing and checking ---------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One corpus notebook: how to write it and the data files it reads."""

    notebook: Callable[[], Written]
    data: Callable[[], dict[str, pd.DataFrame]] | None


def _titanic_in_data_folder() -> dict[str, pd.DataFrame]:
    return {f"data/{name}": frame for name, frame in messy_data.titanic().items()}


CORPUS: dict[str, Entry] = {
    "kale_titanic": Entry(kale_titanic, _titanic_in_data_folder),
    "housing_helpers": Entry(housing_helpers, messy_data.housing),
    "no_tags_kaggle": Entry(no_tags_kaggle, untagged_data.diabetes),
    "attrition_mixed": Entry(attrition_mixed, untagged_data.attrition),
    "wine_ndarray": Entry(wine_ndarray, None),
}


def render(name: str) -> dict[Path, str]:
    """Every file of corpus notebook ``name``, by its path under ``tests/untagged``."""
    entry = CORPUS[name]
    made = entry.notebook()
    files = {
        Path(name) / f"{name}.ipynb": nbformat.writes(made.notebook),
        Path(name) / "hand_tags.json": json.dumps({"cells": made.hand_tags}, indent=1) + "\n",
    }
    for relative, frame in (entry.data() if entry.data else {}).items():
        files[Path(name) / relative] = frame.to_csv(index=False, lineterminator="\n")
    return files


def main(argv: list[str] | None = None) -> int:
    """Write the corpus next to this script, or with ``--check`` report stale files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    files = {relative: text for name in CORPUS for relative, text in render(name).items()}
    return sync(HERE, files, check=args.check, script=Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main())

"""Write the messy notebook corpus: notebooks written the way data scientists write them on
Kaggle, each in ``tests/messy/<name>/`` with the data files it reads.

    python tests/messy/make_messy.py          # (re)write the notebooks and their data
    python tests/messy/make_messy.py --check  # exit 1 if a committed file is stale

The code in these notebooks is NOT written for nb2prod: it is the famous public notebooks'
style (``combine = [train_df, test_df]`` loops, LabelEncoder in a loop over the whole frame,
``fit_transform`` in the preprocessing, several raw frames, numpy arrays without column names,
``DMatrix``, ``DictVectorizer``, ``pd.get_dummies`` on a concatenated frame), with only the
cell tags added. Untagged exploration cells stay, as in real notebooks. Plots are left out
(matplotlib is not a test dependency); the ``skip`` cells hold the model comparisons and sweeps
that real notebooks keep around. The notebooks run on pandas 3, so where the originals relied on
chained ``inplace=True`` (a no-op under copy-on-write) or ``dtypes == 'object'`` (false for the
``str`` dtype) they use the spelling pandas' migration guide gives.

This module is longer than the usual ~400 lines because each notebook is one long literal; the
data generators live in ``messy_data.py``. Tests read the corpus through ``tests/messy_reference.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

import messy_data

HERE = Path(__file__).resolve().parent

# The cell and notebook helpers are the example notebooks' own (same kernelspec, stable ids).
sys.path.insert(0, str(HERE.parents[1] / "example_notebooks"))
from make_examples import code, md, notebook, sync  # noqa: E402


# --- 1. Titanic, Kaggle's "Titanic Data Science Solutions" --------------------------------------


def titanic_kaggle() -> NotebookNode:
    """Two raw frames through the same loops; statistics of each frame; frames reassigned."""
    return notebook(
        [
            md(
                """
                # Titanic Data Science Solutions

                Workflow stages: question definition, acquire training and testing data,
                wrangle/prepare/cleanse, analyse and explore, model and predict, submit.
                """
            ),
            code(
                """
                # data analysis and wrangling
                import pandas as pd
                import numpy as np
                import random as rnd

                # machine learning
                from sklearn.linear_model import LogisticRegression
                from sklearn.svm import SVC, LinearSVC
                from sklearn.ensemble import RandomForestClassifier
                from sklearn.neighbors import KNeighborsClassifier
                from sklearn.tree import DecisionTreeClassifier
                """
            ),
            md("## Acquire data"),
            code(
                """
                train_df = pd.read_csv('train.csv')
                test_df = pd.read_csv('test.csv')
                combine = [train_df, test_df]
                """,
                "load",
            ),
            code("print(train_df.columns.values)"),
            code("# preview the data\ntrain_df.head()"),
            code("train_df.tail()"),
            code("train_df.info()\nprint('_'*40)\ntest_df.info()"),
            code("train_df.describe()"),
            code(
                "train_df[['Pclass', 'Survived']].groupby(['Pclass'], as_index=False).mean()"
                ".sort_values(by='Survived', ascending=False)"
            ),
            code(
                'train_df[["Sex", "Survived"]].groupby([\'Sex\'], as_index=False).mean()'
                ".sort_values(by='Survived', ascending=False)"
            ),
            md("## Wrangle data\n\nCorrecting by dropping features"),
            code(
                """
                print("Before", train_df.shape, test_df.shape, combine[0].shape, combine[1].shape)

                train_df = train_df.drop(['Ticket', 'Cabin'], axis=1)
                test_df = test_df.drop(['Ticket', 'Cabin'], axis=1)
                combine = [train_df, test_df]

                "After", train_df.shape, test_df.shape, combine[0].shape, combine[1].shape
                """,
                "preprocess",
            ),
            md("### Creating new feature extracting from existing"),
            code(
                r"""
                for dataset in combine:
                    dataset['Title'] = dataset.Name.str.extract(' ([A-Za-z]+)\.', expand=False)

                pd.crosstab(train_df['Title'], train_df['Sex'])
                """,
                "preprocess",
            ),
            code(
                """
                for dataset in combine:
                    dataset['Title'] = dataset['Title'].replace(['Lady', 'Countess','Capt', 'Col',\\
                      'Don', 'Dr', 'Major', 'Rev', 'Sir', 'Jonkheer', 'Dona'], 'Rare')

                    dataset['Title'] = dataset['Title'].replace('Mlle', 'Miss')
                    dataset['Title'] = dataset['Title'].replace('Ms', 'Miss')
                    dataset['Title'] = dataset['Title'].replace('Mme', 'Mrs')

                train_df[['Title', 'Survived']].groupby(['Title'], as_index=False).mean()
                """,
                "preprocess",
            ),
            code(
                """
                title_mapping = {"Mr": 1, "Miss": 2, "Mrs": 3, "Master": 4, "Rare": 5}
                for dataset in combine:
                    dataset['Title'] = dataset['Title'].map(title_mapping)
                    dataset['Title'] = dataset['Title'].fillna(0)

                train_df.head()
                """,
                "preprocess",
            ),
            code(
                """
                train_df = train_df.drop(['Name', 'PassengerId'], axis=1)
                test_df = test_df.drop(['Name'], axis=1)
                combine = [train_df, test_df]
                train_df.shape, test_df.shape
                """,
                "preprocess",
            ),
            md("### Converting a categorical feature"),
            code(
                """
                for dataset in combine:
                    dataset['Sex'] = dataset['Sex'].map( {'female': 1, 'male': 0} ).astype(int)

                train_df.head()
                """,
                "preprocess",
            ),
            md("### Completing a numerical continuous feature"),
            code(
                """
                for dataset in combine:
                    dataset['Age'] = dataset['Age'].fillna(dataset['Age'].median())
                    dataset['Age'] = dataset['Age'].astype(int)

                train_df['AgeBand'] = pd.cut(train_df['Age'], 5)
                train_df[['AgeBand', 'Survived']].groupby(['AgeBand'], as_index=False).mean().sort_values(by='AgeBand', ascending=True)
                """,
                "preprocess",
            ),
            code(
                """
                for dataset in combine:
                    dataset.loc[ dataset['Age'] <= 16, 'Age'] = 0
                    dataset.loc[(dataset['Age'] > 16) & (dataset['Age'] <= 32), 'Age'] = 1
                    dataset.loc[(dataset['Age'] > 32) & (dataset['Age'] <= 48), 'Age'] = 2
                    dataset.loc[(dataset['Age'] > 48) & (dataset['Age'] <= 64), 'Age'] = 3
                    dataset.loc[ dataset['Age'] > 64, 'Age']
                train_df.head()
                """,
                "preprocess",
            ),
            code(
                """
                train_df = train_df.drop(['AgeBand'], axis=1)
                combine = [train_df, test_df]
                train_df.head()
                """,
                "preprocess",
            ),
            md("### Create new feature combining existing features"),
            code(
                """
                for dataset in combine:
                    dataset['FamilySize'] = dataset['SibSp'] + dataset['Parch'] + 1

                train_df[['FamilySize', 'Survived']].groupby(['FamilySize'], as_index=False).mean().sort_values(by='Survived', ascending=False)
                """,
                "preprocess",
            ),
            code(
                """
                for dataset in combine:
                    dataset['IsAlone'] = 0
                    dataset.loc[dataset['FamilySize'] == 1, 'IsAlone'] = 1

                train_df[['IsAlone', 'Survived']].groupby(['IsAlone'], as_index=False).mean()
                """,
                "preprocess",
            ),
            code(
                """
                train_df = train_df.drop(['Parch', 'SibSp', 'FamilySize'], axis=1)
                test_df = test_df.drop(['Parch', 'SibSp', 'FamilySize'], axis=1)
                combine = [train_df, test_df]

                train_df.head()
                """,
                "preprocess",
            ),
            code(
                """
                for dataset in combine:
                    dataset['Age*Class'] = dataset.Age * dataset.Pclass

                train_df.loc[:, ['Age*Class', 'Age', 'Pclass']].head(10)
                """,
                "preprocess",
            ),
            md("### Completing a categorical feature"),
            code(
                """
                freq_port = train_df.Embarked.dropna().mode()[0]
                freq_port
                """,
                "preprocess",
            ),
            code(
                """
                for dataset in combine:
                    dataset['Embarked'] = dataset['Embarked'].fillna(freq_port)

                train_df[['Embarked', 'Survived']].groupby(['Embarked'], as_index=False).mean().sort_values(by='Survived', ascending=False)
                """,
                "preprocess",
            ),
            code(
                """
                for dataset in combine:
                    dataset['Embarked'] = dataset['Embarked'].map( {'S': 0, 'C': 1, 'Q': 2} ).astype(int)

                train_df.head()
                """,
                "preprocess",
            ),
            md(
                """
                ### Quick completing and converting a numeric feature

                (The original `test_df['Fare'].fillna(..., inplace=True)` does nothing under
                pandas 3's copy-on-write; this is the spelling pandas suggests.)
                """
            ),
            code(
                """
                test_df.fillna({'Fare': test_df['Fare'].dropna().median()}, inplace=True)
                test_df.head()
                """,
                "preprocess",
            ),
            code(
                """
                train_df['FareBand'] = pd.qcut(train_df['Fare'], 4)
                train_df[['FareBand', 'Survived']].groupby(['FareBand'], as_index=False).mean().sort_values(by='FareBand', ascending=True)
                """,
                "preprocess",
            ),
            code(
                """
                for dataset in combine:
                    dataset.loc[ dataset['Fare'] <= 7.91, 'Fare'] = 0
                    dataset.loc[(dataset['Fare'] > 7.91) & (dataset['Fare'] <= 14.454), 'Fare'] = 1
                    dataset.loc[(dataset['Fare'] > 14.454) & (dataset['Fare'] <= 31), 'Fare']   = 2
                    dataset.loc[ dataset['Fare'] > 31, 'Fare'] = 3
                    dataset['Fare'] = dataset['Fare'].astype(int)

                train_df = train_df.drop(['FareBand'], axis=1)
                combine = [train_df, test_df]

                train_df.head(10)
                """,
                "preprocess",
            ),
            code("test_df.head(10)"),
            md("## Model, predict and solve"),
            code(
                """
                X_train = train_df.drop("Survived", axis=1)
                Y_train = train_df["Survived"]
                X_test  = test_df.drop("PassengerId", axis=1).copy()
                X_train.shape, Y_train.shape, X_test.shape
                """,
                "preprocess",
            ),
            code(
                """
                # Logistic Regression

                logreg = LogisticRegression()
                logreg.fit(X_train, Y_train)
                """,
                "train",
            ),
            code("Y_pred = logreg.predict(X_test)", "predict"),
            code(
                """
                acc_log = round(logreg.score(X_train, Y_train) * 100, 2)
                acc_log
                """,
                "evaluate",
            ),
            code(
                """
                coeff_df = pd.DataFrame(train_df.columns.delete(0))
                coeff_df.columns = ['Feature']
                coeff_df["Correlation"] = pd.Series(logreg.coef_[0])

                coeff_df.sort_values(by='Correlation', ascending=False)
                """
            ),
            code(
                """
                # Support Vector Machines

                svc = SVC()
                svc.fit(X_train, Y_train)
                Y_pred = svc.predict(X_test)
                acc_svc = round(svc.score(X_train, Y_train) * 100, 2)

                knn = KNeighborsClassifier(n_neighbors = 3)
                knn.fit(X_train, Y_train)
                Y_pred = knn.predict(X_test)
                acc_knn = round(knn.score(X_train, Y_train) * 100, 2)

                # Random Forest

                random_forest = RandomForestClassifier(n_estimators=100)
                random_forest.fit(X_train, Y_train)
                Y_pred = random_forest.predict(X_test)
                random_forest.score(X_train, Y_train)
                acc_random_forest = round(random_forest.score(X_train, Y_train) * 100, 2)

                models = pd.DataFrame({
                    'Model': ['Support Vector Machines', 'KNN', 'Logistic Regression',
                              'Random Forest'],
                    'Score': [acc_svc, acc_knn, acc_log, acc_random_forest]})
                models.sort_values(by='Score', ascending=False)
                """,
                "skip",
            ),
            code(
                """
                submission = pd.DataFrame({
                        "PassengerId": test_df["PassengerId"],
                        "Survived": Y_pred
                    })
                submission.to_csv('submission.csv', index=False)
                """
            ),
        ]
    )


# --- 2. Telco churn: LabelEncoder in a loop, scaler fitted in preprocess, GridSearchCV ----------


def churn_labelencoder() -> NotebookNode:
    """One frame, encoders and a scaler fitted on all of it in preprocess; the split in train."""
    return notebook(
        [
            md("# Telco Customer Churn: EDA + Random Forest with GridSearchCV"),
            code(
                """
                import numpy as np
                import pandas as pd
                import warnings
                warnings.filterwarnings('ignore')

                from sklearn.preprocessing import LabelEncoder, StandardScaler
                from sklearn.model_selection import train_test_split, GridSearchCV
                from sklearn.ensemble import RandomForestClassifier
                from sklearn.metrics import accuracy_score, classification_report, confusion_matrix
                """
            ),
            code("df = pd.read_csv('WA_Fn-UseC_-Telco-Customer-Churn.csv')", "load"),
            code("df.head()"),
            code("df.shape"),
            code("df.info()"),
            code("df.isnull().sum()"),
            code("df['Churn'].value_counts()"),
            code("df.describe()"),
            md("## Data cleaning\n\nTotalCharges is stored as text: blanks for new customers."),
            code(
                """
                df.drop('customerID', axis=1, inplace=True)
                df['TotalCharges'] = pd.to_numeric(df['TotalCharges'], errors='coerce')
                df.isnull().sum()
                """,
                "preprocess",
            ),
            code(
                "df['TotalCharges'] = df['TotalCharges'].fillna(df['TotalCharges'].mean())",
                "preprocess",
            ),
            code("df[df['tenure'] == 0]"),
            md("## Encoding"),
            code(
                """
                cat_cols = df.select_dtypes(include='object').columns
                num_cols = ['tenure', 'MonthlyCharges', 'TotalCharges']
                print(cat_cols)

                for col in cat_cols:
                    df[col] = LabelEncoder().fit_transform(df[col])
                """,
                "preprocess",
            ),
            code(
                """
                scaler = StandardScaler()
                df[num_cols] = scaler.fit_transform(df[num_cols])
                df.head()
                """,
                "preprocess",
            ),
            code("df.corr()['Churn'].sort_values(ascending=False)"),
            md("## Model"),
            code(
                """
                X = df.drop('Churn', axis=1)
                y = df['Churn']
                X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42, stratify=y)

                param_grid = {
                    'n_estimators': [25, 50],
                    'max_depth': [4, 8],
                }
                grid = GridSearchCV(RandomForestClassifier(random_state=42), param_grid, cv=3, scoring='accuracy')
                grid.fit(X_train, y_train)
                print(grid.best_params_)
                print(grid.best_score_)
                """,
                "train",
            ),
            code("y_pred = grid.predict(X_test)", "predict"),
            code(
                """
                accuracy = accuracy_score(y_test, y_pred)
                print(accuracy)
                print(classification_report(y_test, y_pred))
                """,
                "evaluate",
            ),
            code("confusion_matrix(y_test, y_pred)"),
            code(
                """
                importances = pd.Series(grid.best_estimator_.feature_importances_, index=X.columns)
                importances.sort_values(ascending=False).head(10)
                """
            ),
        ]
    )


# --- 3. California housing, "Hands-On Machine Learning" chapter 2 -----------------------------


def housing_columntransformer() -> NotebookNode:
    """A custom transformer class, a ColumnTransformer fitted in preprocess, the book's split."""
    return notebook(
        [
            md("# Chapter 2 – End-to-end Machine Learning project"),
            code(
                """
                import os
                import numpy as np
                import pandas as pd

                np.random.seed(42)
                """
            ),
            md("## Get the data"),
            code(
                """
                HOUSING_PATH = os.path.join("datasets", "housing")

                def load_housing_data(housing_path=HOUSING_PATH):
                    csv_path = os.path.join(housing_path, "housing.csv")
                    return pd.read_csv(csv_path)
                """,
                "load",
            ),
            code(
                """
                housing = load_housing_data()
                housing.head()
                """,
                "load",
            ),
            code("housing.info()"),
            code('housing["ocean_proximity"].value_counts()'),
            code("housing.describe()"),
            code(
                """
                housing["income_cat"] = pd.cut(housing["median_income"],
                                               bins=[0., 1.5, 3.0, 4.5, 6., np.inf],
                                               labels=[1, 2, 3, 4, 5])

                from sklearn.model_selection import StratifiedShuffleSplit

                split = StratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=42)
                for train_index, test_index in split.split(housing, housing["income_cat"]):
                    strat_train_set = housing.loc[train_index]
                    strat_test_set = housing.loc[test_index]
                """,
                "load",
            ),
            code('strat_test_set["income_cat"].value_counts() / len(strat_test_set)'),
            code(
                """
                for set_ in (strat_train_set, strat_test_set):
                    set_.drop("income_cat", axis=1, inplace=True)
                """,
                "load",
            ),
            md("## Discover and visualize the data to gain insights"),
            code("housing = strat_train_set.copy()"),
            code(
                """
                corr_matrix = housing.corr(numeric_only=True)
                corr_matrix["median_house_value"].sort_values(ascending=False)
                """
            ),
            code(
                """
                housing["rooms_per_household"] = housing["total_rooms"]/housing["households"]
                housing["bedrooms_per_room"] = housing["total_bedrooms"]/housing["total_rooms"]
                housing["population_per_household"]=housing["population"]/housing["households"]
                """
            ),
            md("## Prepare the data for Machine Learning algorithms"),
            code(
                """
                housing = strat_train_set.drop("median_house_value", axis=1) # drop labels for training set
                housing_labels = strat_train_set["median_house_value"].copy()
                """,
                "preprocess",
            ),
            code(
                """
                sample_incomplete_rows = housing[housing.isnull().any(axis=1)].head()
                sample_incomplete_rows
                """
            ),
            code('housing_num = housing.drop("ocean_proximity", axis=1)', "preprocess"),
            code(
                """
                from sklearn.base import BaseEstimator, TransformerMixin

                # column index
                rooms_ix, bedrooms_ix, population_ix, households_ix = 3, 4, 5, 6

                class CombinedAttributesAdder(BaseEstimator, TransformerMixin):
                    def __init__(self, add_bedrooms_per_room=True): # no *args or **kargs
                        self.add_bedrooms_per_room = add_bedrooms_per_room
                    def fit(self, X, y=None):
                        return self  # nothing else to do
                    def transform(self, X):
                        rooms_per_household = X[:, rooms_ix] / X[:, households_ix]
                        population_per_household = X[:, population_ix] / X[:, households_ix]
                        if self.add_bedrooms_per_room:
                            bedrooms_per_room = X[:, bedrooms_ix] / X[:, rooms_ix]
                            return np.c_[X, rooms_per_household, population_per_household,
                                         bedrooms_per_room]
                        else:
                            return np.c_[X, rooms_per_household, population_per_household]
                """,
                "preprocess",
            ),
            code(
                """
                from sklearn.pipeline import Pipeline
                from sklearn.preprocessing import StandardScaler
                from sklearn.impute import SimpleImputer
                from sklearn.compose import ColumnTransformer
                from sklearn.preprocessing import OneHotEncoder

                num_pipeline = Pipeline([
                        ('imputer', SimpleImputer(strategy="median")),
                        ('attribs_adder', CombinedAttributesAdder()),
                        ('std_scaler', StandardScaler()),
                    ])

                num_attribs = list(housing_num)
                cat_attribs = ["ocean_proximity"]

                full_pipeline = ColumnTransformer([
                        ("num", num_pipeline, num_attribs),
                        ("cat", OneHotEncoder(), cat_attribs),
                    ])

                housing_prepared = full_pipeline.fit_transform(housing)
                """,
                "preprocess",
            ),
            code("housing_prepared.shape"),
            md("## Select and train a model"),
            code(
                """
                from sklearn.linear_model import LinearRegression

                lin_reg = LinearRegression()
                lin_reg.fit(housing_prepared, housing_labels)
                """,
                "train",
            ),
            code(
                """
                from sklearn.metrics import mean_squared_error

                housing_predictions = lin_reg.predict(housing_prepared)
                lin_mse = mean_squared_error(housing_labels, housing_predictions)
                lin_rmse = np.sqrt(lin_mse)
                lin_rmse
                """,
                "evaluate",
            ),
            code(
                """
                from sklearn.ensemble import RandomForestRegressor

                forest_reg = RandomForestRegressor(n_estimators=30, random_state=42)
                forest_reg.fit(housing_prepared, housing_labels)
                """,
                "train",
            ),
            code(
                """
                from sklearn.model_selection import cross_val_score

                forest_scores = cross_val_score(forest_reg, housing_prepared, housing_labels,
                                                scoring="neg_mean_squared_error", cv=3)
                forest_rmse_scores = np.sqrt(-forest_scores)
                forest_rmse_scores.mean()
                """,
                "skip",
            ),
            code("final_model = forest_reg", "train"),
            md("## Evaluate your system on the test set"),
            code(
                """
                X_test = strat_test_set.drop("median_house_value", axis=1)
                y_test = strat_test_set["median_house_value"].copy()
                """,
                "evaluate",
            ),
            code(
                """
                X_test_prepared = full_pipeline.transform(X_test)
                final_predictions = final_model.predict(X_test_prepared)
                """,
                "predict",
            ),
            code(
                """
                final_mse = mean_squared_error(y_test, final_predictions)
                final_rmse = np.sqrt(final_mse)
                final_rmse
                """,
                "evaluate",
            ),
        ]
    )


# --- 4. XGBoost's native API on Kaggle's breast cancer data.csv --------------------------------


def xgboost_booster() -> NotebookNode:
    """DMatrix built in preprocess, ``xgb.train``, probabilities from ``bst.predict(dtest)``."""
    return notebook(
        [
            md("# Breast Cancer Wisconsin: XGBoost"),
            code(
                """
                import numpy as np
                import pandas as pd
                import xgboost as xgb
                from sklearn.model_selection import train_test_split
                from sklearn.metrics import accuracy_score, roc_auc_score, confusion_matrix
                """
            ),
            code("data = pd.read_csv('data.csv')", "load"),
            code("data.head()"),
            code("data.shape"),
            code("data.isnull().sum()"),
            code("data.diagnosis.value_counts()"),
            code(
                """
                max_depth = 3
                eta = 0.1
                """,
                "parameters",
            ),
            code(
                """
                data.drop(['Unnamed: 32', 'id'], axis=1, inplace=True)
                data['diagnosis'] = data['diagnosis'].map({'M': 1, 'B': 0})
                """,
                "preprocess",
            ),
            code(
                """
                y = data.diagnosis
                X = data.drop('diagnosis', axis=1)
                X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
                """,
                "preprocess",
            ),
            code(
                """
                dtrain = xgb.DMatrix(X_train, label=y_train)
                dtest = xgb.DMatrix(X_test, label=y_test)
                """,
                "preprocess",
            ),
            code(
                """
                params = {
                    'objective': 'binary:logistic',
                    'max_depth': max_depth,
                    'eta': eta,
                    'eval_metric': 'logloss',
                    'nthread': 1,
                    'seed': 42,
                }
                watchlist = [(dtrain, 'train'), (dtest, 'eval')]
                bst = xgb.train(params, dtrain, num_boost_round=20, evals=watchlist, verbose_eval=5)
                """,
                "train",
            ),
            code(
                """
                cv_results = xgb.cv(params, dtrain, num_boost_round=50, nfold=3, early_stopping_rounds=5, seed=42)
                cv_results.tail()
                """,
                "skip",
            ),
            code("preds = bst.predict(dtest)", "predict"),
            code(
                """
                pred_labels = (preds > 0.5).astype(int)
                accuracy = accuracy_score(y_test, pred_labels)
                auc = roc_auc_score(y_test, preds)
                print(f"Accuracy: {accuracy:.4f}  AUC: {auc:.4f}")
                """,
                "evaluate",
            ),
            code("confusion_matrix(y_test, pred_labels)"),
            code(
                "sorted(bst.get_score(importance_type='gain').items(), "
                "key=lambda kv: kv[1], reverse=True)[:10]"
            ),
        ]
    )


# --- 5. Iris as numpy arrays ------------------------------------------------------------------


def iris_ndarray() -> NotebookNode:
    """No DataFrame anywhere: arrays, the split, then both halves rebound to scaled arrays."""
    return notebook(
        [
            md("# Iris classification with an SVM"),
            code(
                """
                import numpy as np
                from sklearn.datasets import load_iris
                from sklearn.model_selection import train_test_split
                from sklearn.preprocessing import StandardScaler
                from sklearn.svm import SVC
                from sklearn.metrics import accuracy_score, classification_report
                """
            ),
            code(
                """
                X, y = load_iris(return_X_y=True)
                X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=42, stratify=y)
                """,
                "load",
            ),
            code("X.shape, y.shape"),
            code("np.unique(y, return_counts=True)"),
            code("X[:5]"),
            code(
                """
                scaler = StandardScaler()
                X_train = scaler.fit_transform(X_train)
                X_test = scaler.transform(X_test)
                """,
                "preprocess",
            ),
            code("X_train.mean(axis=0), X_train.std(axis=0)"),
            code(
                """
                clf = SVC(kernel='rbf', C=1.0, gamma='scale')
                clf.fit(X_train, y_train)
                """,
                "train",
            ),
            code("y_pred = clf.predict(X_test)", "predict"),
            code(
                """
                acc = accuracy_score(y_test, y_pred)
                print("Accuracy:", acc)
                print(classification_report(y_test, y_pred))
                """,
                "evaluate",
            ),
            code(
                """
                for C in [0.1, 1, 10, 100]:
                    print(C, SVC(C=C).fit(X_train, y_train).score(X_test, y_test))
                """,
                "skip",
            ),
        ]
    )


# --- 6. Telco churn, ML Zoomcamp style: DictVectorizer ---------------------------------------


def churn_dictvectorizer() -> NotebookNode:
    """Columns and values normalised, a three-way split with reset indexes, dicts vectorised."""
    return notebook(
        [
            md("# Churn prediction project"),
            code(
                """
                import pandas as pd
                import numpy as np

                from sklearn.model_selection import train_test_split
                from sklearn.feature_extraction import DictVectorizer
                from sklearn.linear_model import LogisticRegression
                """
            ),
            md("## Data preparation"),
            code("df = pd.read_csv('WA_Fn-UseC_-Telco-Customer-Churn.csv')", "load"),
            code("df.head().T"),
            code(
                """
                df.columns = df.columns.str.lower().str.replace(' ', '_')

                categorical_columns = list(df.select_dtypes(include=['object', 'str']).columns)

                for c in categorical_columns:
                    df[c] = df[c].str.lower().str.replace(' ', '_')
                """,
                "preprocess",
            ),
            code("df.dtypes"),
            code(
                """
                df.totalcharges = pd.to_numeric(df.totalcharges, errors='coerce')
                df.totalcharges = df.totalcharges.fillna(0)
                """,
                "preprocess",
            ),
            code("df.churn.head()"),
            code("df.churn = (df.churn == 'yes').astype(int)", "preprocess"),
            md("## Setting up the validation framework"),
            code(
                """
                df_full_train, df_test = train_test_split(df, test_size=0.2, random_state=1)
                df_train, df_val = train_test_split(df_full_train, test_size=0.25, random_state=1)

                df_train = df_train.reset_index(drop=True)
                df_val = df_val.reset_index(drop=True)
                df_test = df_test.reset_index(drop=True)

                y_train = df_train.churn.values
                y_val = df_val.churn.values
                y_test = df_test.churn.values

                del df_train['churn']
                del df_val['churn']
                del df_test['churn']
                """,
                "preprocess",
            ),
            code("len(df_train), len(df_val), len(df_test)"),
            md("## EDA"),
            code("df_full_train = df_full_train.reset_index(drop=True)"),
            code("df_full_train.churn.value_counts(normalize=True)"),
            code(
                """
                global_churn_rate = df_full_train.churn.mean()
                round(global_churn_rate, 2)
                """
            ),
            code(
                """
                numerical = ['tenure', 'monthlycharges', 'totalcharges']

                categorical = [
                    'gender',
                    'seniorcitizen',
                    'partner',
                    'dependents',
                    'phoneservice',
                    'multiplelines',
                    'internetservice',
                    'onlinesecurity',
                    'onlinebackup',
                    'deviceprotection',
                    'techsupport',
                    'streamingtv',
                    'streamingmovies',
                    'contract',
                    'paperlessbilling',
                    'paymentmethod',
                ]
                """,
                "preprocess",
            ),
            code("df_full_train[categorical].nunique()"),
            code(
                """
                for c in categorical:
                    print(c)
                    df_group = df_full_train.groupby(c).churn.agg(['mean', 'count'])
                    df_group['diff'] = df_group['mean'] - global_churn_rate
                    df_group['risk'] = df_group['mean'] / global_churn_rate
                    print(df_group)
                    print()
                """
            ),
            md("## One-hot encoding"),
            code(
                """
                dv = DictVectorizer(sparse=False)

                train_dicts = df_train[categorical + numerical].to_dict(orient='records')
                X_train = dv.fit_transform(train_dicts)

                val_dicts = df_val[categorical + numerical].to_dict(orient='records')
                X_val = dv.transform(val_dicts)
                """,
                "preprocess",
            ),
            md("## Logistic regression"),
            code(
                """
                model = LogisticRegression(solver='liblinear', C=1.0, max_iter=1000)
                model.fit(X_train, y_train)
                """,
                "train",
            ),
            code("model.intercept_[0]"),
            code("y_pred = model.predict_proba(X_val)[:, 1]", "predict"),
            code(
                """
                churn_decision = (y_pred >= 0.5)
                accuracy = (y_val == churn_decision).mean()
                accuracy
                """,
                "evaluate",
            ),
            code("dict(zip(dv.get_feature_names_out(), model.coef_[0].round(3)))"),
        ]
    )


# --- 7. House prices: "Regularized Linear Models" (concat, skew, get_dummies, mean fill) --------


def house_prices_dummies() -> NotebookNode:
    """train and test concatenated, statistics over both, get_dummies, split back by position."""
    return notebook(
        [
            md("# Regularized Linear Models"),
            code(
                """
                import pandas as pd
                import numpy as np
                from scipy.stats import skew
                from sklearn.linear_model import Ridge, LassoCV
                from sklearn.model_selection import cross_val_score
                """
            ),
            code(
                """
                train = pd.read_csv("train.csv")
                test = pd.read_csv("test.csv")
                """,
                "load",
            ),
            code("train.head()"),
            code(
                """
                all_data = pd.concat((train.loc[:,'MSSubClass':'SaleCondition'],
                                      test.loc[:,'MSSubClass':'SaleCondition']))
                """,
                "preprocess",
            ),
            md(
                """
                ## Data preprocessing

                - transform the skewed numeric features by taking log(feature + 1)
                - create dummy variables for the categorical features
                - replace the numeric missing values (NaN's) with the mean of their columns
                """
            ),
            code(
                """
                #log transform the target:
                train["SalePrice"] = np.log1p(train["SalePrice"])

                #log transform skewed numeric features:
                numeric_feats = all_data.select_dtypes(include=[np.number]).columns

                skewed_feats = train[numeric_feats].apply(lambda x: skew(x.dropna())) #compute skewness
                skewed_feats = skewed_feats[skewed_feats > 0.75]
                skewed_feats = skewed_feats.index

                all_data[skewed_feats] = np.log1p(all_data[skewed_feats])
                """,
                "preprocess",
            ),
            code("all_data = pd.get_dummies(all_data)", "preprocess"),
            code(
                """
                #filling NA's with the mean of the column:
                all_data = all_data.fillna(all_data.mean())
                """,
                "preprocess",
            ),
            code(
                """
                #creating matrices for sklearn:
                X_train = all_data[:train.shape[0]]
                X_test = all_data[train.shape[0]:]
                y = train.SalePrice
                """,
                "preprocess",
            ),
            md("## Models"),
            code(
                """
                def rmse_cv(model):
                    rmse= np.sqrt(-cross_val_score(model, X_train, y, scoring="neg_mean_squared_error", cv = 5))
                    return(rmse)
                """,
                "evaluate",
            ),
            code(
                """
                alphas = [0.05, 0.1, 0.3, 1, 3, 5, 10, 15, 30, 50, 75]
                cv_ridge = [rmse_cv(Ridge(alpha = alpha)).mean()
                            for alpha in alphas]
                cv_ridge = pd.Series(cv_ridge, index = alphas)
                cv_ridge.min()
                """,
                "skip",
            ),
            code(
                "model_lasso = LassoCV(alphas = [1, 0.1, 0.001, 0.0005], max_iter=5000)"
                ".fit(X_train, y)",
                "train",
            ),
            code("lasso_rmse = rmse_cv(model_lasso).mean()", "evaluate"),
            code(
                """
                coef = pd.Series(model_lasso.coef_, index = X_train.columns)
                print("Lasso picked " + str(sum(coef != 0)) + " variables and eliminated the other "
                      +  str(sum(coef == 0)) + " variables")
                """
            ),
            code("preds = np.expm1(model_lasso.predict(X_test))", "predict"),
            code(
                """
                solution = pd.DataFrame({"id":test.Id, "SalePrice":preds})
                solution.to_csv("lasso_sol.csv", index = False)
                """
            ),
        ]
    )


# --- 8. Loan prediction: mode fill, pd.cut bins, get_dummies(drop_first=True) ------------------


def loan_get_dummies() -> NotebookNode:
    """Mode and mean fills over the whole frame, bins, logs, dummies, the split in train."""
    return notebook(
        [
            md("# Loan Prediction"),
            code(
                """
                import pandas as pd
                import numpy as np
                from sklearn.model_selection import train_test_split
                from sklearn.linear_model import LogisticRegression
                from sklearn.metrics import accuracy_score
                """
            ),
            code("df = pd.read_csv('train_u6lujuX_CVtuZ9i.csv')", "load"),
            code("df.head()"),
            code("df.isnull().sum()"),
            code("df['Loan_Status'].value_counts(normalize=True)"),
            code("pd.crosstab(df['Credit_History'], df['Loan_Status'])"),
            md("## Missing values"),
            code(
                """
                df = df.drop('Loan_ID', axis=1)
                for col in ['Gender', 'Married', 'Dependents', 'Self_Employed', 'Loan_Amount_Term', 'Credit_History']:
                    df[col] = df[col].fillna(df[col].mode()[0])
                df['LoanAmount'] = df['LoanAmount'].fillna(df['LoanAmount'].mean())
                df.isnull().sum()
                """,
                "preprocess",
            ),
            md("## Feature engineering"),
            code(
                """
                df['LoanAmount_log'] = np.log(df['LoanAmount'])
                df['TotalIncome'] = df['ApplicantIncome'] + df['CoapplicantIncome']
                df['TotalIncome_log'] = np.log(df['TotalIncome'])

                bins = [0, 2500, 4000, 6000, 81000]
                group = ['Low', 'Average', 'High', 'Very high']
                df['Income_bin'] = pd.cut(df['TotalIncome'], bins, labels=group)

                df['Dependents'] = df['Dependents'].replace('3+', '3').astype(int)
                df['Loan_Status'] = df['Loan_Status'].map({'Y': 1, 'N': 0})
                """,
                "preprocess",
            ),
            code("pd.crosstab(df['Income_bin'], df['Loan_Status'], normalize='index')"),
            code(
                """
                df = df.drop(['ApplicantIncome', 'CoapplicantIncome', 'TotalIncome', 'LoanAmount'], axis=1)
                df = pd.get_dummies(df, drop_first=True)
                df.head()
                """,
                "preprocess",
            ),
            md("## Model"),
            code(
                """
                X = df.drop('Loan_Status', axis=1)
                y = df['Loan_Status']
                x_train, x_cv, y_train, y_cv = train_test_split(X, y, test_size=0.3, random_state=1)

                model = LogisticRegression()
                model.fit(x_train, y_train)
                """,
                "train",
            ),
            code("pred_cv = model.predict(x_cv)", "predict"),
            code(
                """
                accuracy = accuracy_score(y_cv, pred_cv)
                accuracy
                """,
                "evaluate",
            ),
        ]
    )


# --- writing and checking ---------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One corpus notebook: how to build it and the data files it reads."""

    notebook: Callable[[], NotebookNode]
    data: Callable[[], messy_data.DataFiles] | None


CORPUS: dict[str, Entry] = {
    "titanic_kaggle": Entry(titanic_kaggle, messy_data.titanic),
    "churn_labelencoder": Entry(churn_labelencoder, messy_data.churn_labelencoder),
    "housing_columntransformer": Entry(housing_columntransformer, messy_data.housing),
    "xgboost_booster": Entry(xgboost_booster, messy_data.breast_cancer),
    "iris_ndarray": Entry(iris_ndarray, None),
    "churn_dictvectorizer": Entry(churn_dictvectorizer, messy_data.churn_dictvectorizer),
    "house_prices_dummies": Entry(house_prices_dummies, messy_data.house_prices),
    "loan_get_dummies": Entry(loan_get_dummies, messy_data.loans),
}


def render(name: str) -> dict[Path, str]:
    """Every file of corpus notebook ``name``, by its path under ``tests/messy``, as committed."""
    entry = CORPUS[name]
    files = {Path(name) / f"{name}.ipynb": nbformat.writes(entry.notebook())}
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
